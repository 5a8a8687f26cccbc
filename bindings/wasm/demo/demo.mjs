// The demo's computation, without the page: simulate a 3-state set, then generate the
// kernel-regression volume at each state's latent point from the true states used as a
// 1-D embedding. `wasm` is the initialised module; `log(text)` reports progress.
export function run(wasm, { nImages = 400, imageSize = 32, noiseLevel = 0.1, seed = 0 }, log) {
  let t = performance.now();
  const sim = wasm.simulate({ imageSize, nImages, noiseLevel, seed, discreteOnly: true });
  log(`simulated ${sim.length} images of ${imageSize} px in ${(performance.now() - t).toFixed(0)} ms`);
  const embedding = new Float32Array(sim.length);
  sim.states.forEach((s, i) => { embedding[i] = s + (((i * 37) % 11) - 5) / 50; });
  const dataset = new wasm.Dataset(sim.images, sim.rotations, sim.translations, sim.ctf);
  t = performance.now();
  dataset.noiseProfile();
  log(`noise profile estimated in ${(performance.now() - t).toFixed(0)} ms`);
  const identity = [1, 0, 0, 0, 1, 0, 0, 0, 1];
  // Each state's difference from the mean: what a state-specific volume should show.
  const mean = sim.meanVolume();
  const truthDiffs = [0, 1, 2].map((s) => sim.volume(s).map((x, i) => x - mean[i]));
  const states = [0, 1, 2].map((state) => {
    t = performance.now();
    const v = dataset.generateVolume(embedding, [state], { nBins: 10, nMinImages: 30 });
    const truth = sim.volume(state);
    const result = {
      state,
      generated: wasm.project(v.filtered, identity),
      truth: wasm.project(truth, identity),
      fsc: wasm.fsc(v.filtered, truth),
      resolution: wasm.fscResolution(wasm.fsc(v.filtered, truth), imageSize, sim.voxelSize, 0.5),
    };
    const diff = v.filtered.map((x, i) => x - mean[i]);
    result.stateCorrelations = truthDiffs.map((d) => correlation(diff, d));
    v.free();
    log(`state ${state}: volume in ${(performance.now() - t).toFixed(0)} ms; its difference ` +
      `from the mean correlates with states 0, 1, 2 as ` +
      `${result.stateCorrelations.map((c) => c.toFixed(2)).join(', ')}; ` +
      `FSC 0.5 with the truth at ${result.resolution.toFixed(1)} Å`);
    return result;
  });
  const images = [0, 1, 2, 3, 4, 5].map((i) => sim.images.slice(i * imageSize ** 2, (i + 1) * imageSize ** 2));
  dataset.free();
  sim.free();
  return { imageSize, images, states };
}

function correlation(a, b) {
  let ma = 0, mb = 0;
  for (let i = 0; i < a.length; i++) { ma += a[i]; mb += b[i]; }
  ma /= a.length; mb /= b.length;
  let ab = 0, aa = 0, bb = 0;
  for (let i = 0; i < a.length; i++) {
    const x = a[i] - ma, y = b[i] - mb;
    ab += x * y; aa += x * x; bb += y * y;
  }
  return ab / Math.sqrt(aa * bb);
}
