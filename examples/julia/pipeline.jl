# The RECOVAR pipeline from Julia: open a simulated dataset, run the stages, generate a
# volume at a latent point, and one from cryoDRGN's z.pkl-style external embedding.
#
#   cargo build --release                         # builds target/release/librecovar.so
#   target/release/recovar make_test_dataset sim --image-size 32 --n-images 500
#   RECOVAR_LIB=target/release/librecovar.so \
#       julia --project=bindings/julia/Recovar examples/julia/pipeline.jl sim/test_dataset out
#
# Writes out/mean.mrc, out/volume.mrc (at the centroid of the zdim-2 embedding) and
# out/from_embedding.mrc (kernel regression on that embedding, as one would with a z.pkl).

using Recovar

function main(args)
    length(args) == 2 || error("usage: julia pipeline.jl DATASET_DIR OUT_DIR")
    data, out = args
    mkpath(out)
    particles = first(filter(f -> endswith(f, ".mrcs"), readdir(data; join = true)))

    ds = Dataset(particles; poses = joinpath(data, "poses.pkl"), ctf = joinpath(data, "ctf.pkl"))
    println("recovar ", Recovar.version(), ": ", ds)

    model = Model(ds; zdims = [2], memory = :very_low)
    seen = Ref("")
    progress = (stage, done, total) -> begin
        if stage != seen[]
            seen[] = stage
            println("  ", stage)
        end
        true
    end
    for stage in (:mean, :noise, :covariance, :embedding)
        println("stage ", stage)
        run_stage!(model, stage; progress = progress)
    end

    # Volumes are (N, N, N) Julia arrays indexed [x, y, z] (the C order reversed).
    mean = mean_volume(model)
    write_mrc(joinpath(out, "mean.mrc"), mean; voxel_size = voxel_size(model))
    println(n_eigen(model), " principal components; top eigenvalues ",
            round.(eigenvalues(model)[1:min(4, end)]; sigdigits = 4))

    emb = embedding(model, 2)          # emb.zs is (2, n_images): one column per image
    point = vec(sum(emb.zs; dims = 2)) ./ size(emb.zs, 2)
    vol = generate(model, 2, point)
    write_mrc(vol, joinpath(out, "volume.mrc"))
    println("volume at ", point, ": ", size(volume_data(vol)), " voxels of ", voxel_size(vol), " Å")

    # Kernel regression on an external embedding: any (zdim, n_images) matrix, e.g.
    # read_embedding("z.pkl") for cryoDRGN's latent space.
    ext = generate_from_embedding(ds, emb.zs, point; n_bins = 10)
    write_mrc(ext, joinpath(out, "from_embedding.mrc"); kind = :unfiltered)
    println("wrote ", out)
end

main(ARGS)
