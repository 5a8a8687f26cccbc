/*
 * The C ABI end to end: run the pipeline stage by stage on a simulated dataset, query the
 * model (also from several threads at once), generate a volume at a latent point, save
 * and reload the model, cancel a stage, and check the error paths. Results are written as
 * raw little-endian arrays for the Rust test (ffi/tests/c_api.rs) to compare with the Rust
 * API's results on the same files.
 *
 * usage: pipeline DATASET_DIR OUT_DIR   (DATASET_DIR from `recovar make_test_dataset`)
 */
#include "recovar.h"

#include <math.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures = 0;

#define CHECK(cond, ...)                                                    \
  do {                                                                      \
    if (!(cond)) {                                                          \
      fprintf(stderr, "FAILED %s:%d: %s: ", __FILE__, __LINE__, #cond);     \
      fprintf(stderr, __VA_ARGS__);                                         \
      fprintf(stderr, " [last error: %s]\n", rcv_last_error_message());     \
      failures++;                                                           \
    }                                                                       \
  } while (0)

#define OK(call) CHECK((call) == RCV_OK, "%s", #call)

static void path_join(char *out, size_t cap, const char *dir, const char *name) {
  snprintf(out, cap, "%s/%s", dir, name);
}

static void dump(const char *dir, const char *name, const void *data, size_t bytes) {
  char p[4096];
  path_join(p, sizeof p, dir, name);
  FILE *f = fopen(p, "wb");
  CHECK(f != NULL, "cannot write %s", p);
  if (f) {
    CHECK(fwrite(data, 1, bytes, f) == bytes, "short write %s", p);
    fclose(f);
  }
}

typedef struct {
  int calls;
  int cancel_after; /* 0: never */
  char last_stage[128];
} progress_state;

static int32_t on_progress(void *user, const char *stage, uint64_t done, uint64_t total) {
  progress_state *s = (progress_state *)user;
  s->calls++;
  strncpy(s->last_stage, stage, sizeof s->last_stage - 1);
  (void)done;
  (void)total;
  return (s->cancel_after > 0 && s->calls >= s->cancel_after) ? 1 : 0;
}

typedef struct {
  const rcv_model *model;
  const float *mean;
  const float *eigen0;
  size_t n3;
  size_t zs_len;
  const float *zs;
  int ok;
} thread_job;

/* Query one model from several threads: every answer must equal the single-thread one. */
static void *query(void *arg) {
  thread_job *j = (thread_job *)arg;
  float *buf = malloc(j->n3 * sizeof(float));
  float *zs = malloc(j->zs_len * sizeof(float));
  j->ok = buf != NULL && zs != NULL;
  for (int rep = 0; rep < 5 && j->ok; rep++) {
    j->ok &= rcv_model_mean(j->model, buf, j->n3) == RCV_OK &&
             memcmp(buf, j->mean, j->n3 * sizeof(float)) == 0;
    j->ok &= rcv_model_eigenvolume(j->model, 0, buf, j->n3) == RCV_OK &&
             memcmp(buf, j->eigen0, j->n3 * sizeof(float)) == 0;
    j->ok &= rcv_model_embedding(j->model, 2, 1, zs, j->zs_len, NULL, 0, NULL, 0) == RCV_OK &&
             memcmp(zs, j->zs, j->zs_len * sizeof(float)) == 0;
  }
  free(buf);
  free(zs);
  return NULL;
}

static void error_paths(const rcv_model *model) {
  rcv_dataset_options o;
  rcv_dataset *ds = NULL;
  rcv_model *m = NULL;
  rcv_volume *v = NULL;
  float f[8] = {0};
  size_t n = 0;

  /* A path that does not exist: an I/O or not-found error naming the file. */
  rcv_dataset_options_init(&o);
  o.particles = "/nonexistent/particles.mrcs";
  rcv_status st = rcv_dataset_open(&o, &ds);
  CHECK(st == RCV_ERR_IO || st == RCV_ERR_NOT_FOUND || st == RCV_ERR_FORMAT, "status %d", st);
  CHECK(ds == NULL, "handle on failure");
  CHECK(strstr(rcv_last_error_message(), "/nonexistent/particles.mrcs") != NULL, "message");

  st = rcv_model_load("/nonexistent/run", &m);
  CHECK(st != RCV_OK && m == NULL, "load of a missing folder");
  CHECK(strstr(rcv_last_error_message(), "/nonexistent/run") != NULL, "message names folder");

  /* NULL handles and out pointers. */
  CHECK(rcv_model_box_size(NULL, &n) == RCV_ERR_INVALID_ARGUMENT, "NULL model");
  CHECK(strstr(rcv_last_error_message(), "model is NULL") != NULL, "message");
  CHECK(rcv_model_box_size(model, NULL) == RCV_ERR_INVALID_ARGUMENT, "NULL out");
  CHECK(rcv_model_run_stage(NULL, RCV_STAGE_MEAN, NULL, NULL) == RCV_ERR_INVALID_ARGUMENT,
        "NULL model run");
  CHECK(rcv_volume_data(NULL, RCV_VOLUME_FILTERED, f, 8) == RCV_ERR_INVALID_ARGUMENT,
        "NULL volume");
  rcv_model_free(NULL);
  rcv_volume_free(NULL);
  rcv_dataset_free(NULL);

  /* Wrong array sizes. */
  CHECK(rcv_model_mean(model, f, 8) == RCV_ERR_INVALID_ARGUMENT, "short buffer");
  CHECK(strstr(rcv_last_error_message(), "holds 8 elements") != NULL, "message: %s",
        rcv_last_error_message());
  CHECK(rcv_model_eigenvolume(model, 100000, f, 8) == RCV_ERR_INVALID_ARGUMENT, "bad k");
  CHECK(rcv_model_embedding(model, 7, 1, f, 8, NULL, 0, NULL, 0) == RCV_ERR_INVALID_ARGUMENT,
        "missing zdim");
  CHECK(strstr(rcv_last_error_message(), "dimension 7") != NULL, "message");
  CHECK(rcv_model_run_stage((rcv_model *)model, 42, NULL, NULL) == RCV_ERR_INVALID_ARGUMENT,
        "bad stage");
  float pt[3] = {0, 0, 0};
  CHECK(rcv_model_generate(model, 2, 1, pt, 3, NULL, NULL, NULL, &v) ==
            RCV_ERR_INVALID_ARGUMENT && v == NULL,
        "point of the wrong dimension");

  /* Datasets from memory: mismatched array sizes and NaN pixels are refused. */
  float img[4 * 4 * 2] = {0};
  float rot[18] = {1, 0, 0, 0, 1, 0, 0, 0, 1, 1, 0, 0, 0, 1, 0, 0, 0, 1};
  float tr[4] = {0};
  double ctf[18] = {4, 1, 10000, 10000, 0, 300, 2.7, 0.1, 0,
                    4, 1, 10000, 10000, 0, 300, 2.7, 0.1, 0};
  OK(rcv_dataset_create(img, 32, 2, 4, rot, 18, tr, 4, ctf, 18, 0, &ds));
  OK(rcv_dataset_count(ds, &n));
  CHECK(n == 2, "count %zu", n);
  rcv_dataset_free(ds);
  ds = NULL;
  CHECK(rcv_dataset_create(img, 31, 2, 4, rot, 18, tr, 4, ctf, 18, 0, &ds) ==
            RCV_ERR_INVALID_ARGUMENT && ds == NULL,
        "images of the wrong size");
  CHECK(strstr(rcv_last_error_message(), "images has 31 elements") != NULL, "message");
  CHECK(rcv_dataset_create(img, 32, 2, 4, rot, 9, tr, 4, ctf, 18, 0, &ds) ==
            RCV_ERR_INVALID_ARGUMENT,
        "rotations of the wrong size");
  double bad_ctf[18];
  memcpy(bad_ctf, ctf, sizeof ctf);
  bad_ctf[11] = NAN;
  CHECK(rcv_dataset_create(img, 32, 2, 4, rot, 18, tr, 4, bad_ctf, 18, 0, &ds) != RCV_OK &&
            ds == NULL,
        "NaN in the CTF");

  /* Options structs from an older caller (struct_size 0) are refused with a hint. */
  rcv_model_options mo;
  rcv_model_options_init(&mo);
  mo.struct_size = 0;
  CHECK(rcv_model_create(NULL, &mo, &m) == RCV_ERR_INVALID_ARGUMENT, "NULL dataset");
}

/* Device selection: a CPU model says so; a GPU that exists nowhere is RCV_ERR_DEVICE naming
 * it (never a silent fallback); bad values are invalid arguments; a caller built before the
 * device fields existed (smaller struct_size) gets auto, whatever follows its struct. */
static void device_paths(const rcv_dataset *ds, const rcv_model *cpu_model) {
  const char *note = NULL;
  OK(rcv_model_device(cpu_model, &note));
  CHECK(note != NULL && strncmp(note, "device: cpu", 11) == 0, "note: %s", note ? note : "");
  CHECK(note != NULL && strstr(note, "auto") == NULL, "an explicit CPU is not auto: %s",
        note ? note : "");
  CHECK(rcv_model_device(NULL, &note) == RCV_ERR_INVALID_ARGUMENT, "NULL model");
  CHECK(rcv_model_device(cpu_model, NULL) == RCV_ERR_INVALID_ARGUMENT, "NULL out");

  rcv_model_options mo;
  rcv_model *m = NULL;
  rcv_model_options_init(&mo);
  CHECK(mo.device == RCV_DEVICE_AUTO && mo.device_index == 0, "defaults %d %d", mo.device,
        mo.device_index);
  mo.device = RCV_DEVICE_CUDA;
  mo.device_index = 4096;
  CHECK(rcv_model_create(ds, &mo, &m) == RCV_ERR_DEVICE && m == NULL, "cuda:4096");
  CHECK(strstr(rcv_last_error_message(), "cuda:4096") != NULL, "message names the device: %s",
        rcv_last_error_message());

  mo.device = 7;
  mo.device_index = 0;
  CHECK(rcv_model_create(ds, &mo, &m) == RCV_ERR_INVALID_ARGUMENT && m == NULL, "kind 7");
  CHECK(strstr(rcv_last_error_message(), "options.device = 7") != NULL, "message: %s",
        rcv_last_error_message());
  mo.device = RCV_DEVICE_CUDA;
  mo.device_index = -1;
  CHECK(rcv_model_create(ds, &mo, &m) == RCV_ERR_INVALID_ARGUMENT && m == NULL, "index -1");
  mo.device = RCV_DEVICE_CPU;
  mo.device_index = 1;
  CHECK(rcv_model_create(ds, &mo, &m) == RCV_ERR_INVALID_ARGUMENT && m == NULL,
        "an index without RCV_DEVICE_CUDA");

  /* An older caller's struct ends before `device`: garbage after it is never read. */
  mo.device = 99;
  mo.device_index = -5;
  mo.struct_size = offsetof(rcv_model_options, device);
  OK(rcv_model_create(ds, &mo, &m));
  if (m) {
    OK(rcv_model_device(m, &note));
    CHECK(note != NULL && strncmp(note, "device: ", 8) == 0, "auto note: %s", note ? note : "");
    rcv_model_free(m);
    m = NULL;
  }

  /* Kernel options: the same rules for generation from an external embedding. */
  size_t n = 0;
  OK(rcv_dataset_count(ds, &n));
  float *zs = calloc(n, sizeof(float));
  float pt[1] = {0};
  rcv_kernel_options ko;
  rcv_kernel_options_init(&ko);
  CHECK(ko.device == RCV_DEVICE_AUTO && ko.device_index == 0, "kernel defaults");
  rcv_volume *v = NULL;
  ko.device = RCV_DEVICE_CUDA;
  ko.device_index = 4096;
  CHECK(rcv_generate_from_embedding(ds, zs, n, 1, NULL, 0, pt, 1, &ko, NULL, NULL, &v) ==
            RCV_ERR_DEVICE && v == NULL,
        "generate_from_embedding on cuda:4096");
  CHECK(strstr(rcv_last_error_message(), "cuda:4096") != NULL, "message: %s",
        rcv_last_error_message());
  ko.device = -3;
  ko.device_index = 0;
  CHECK(rcv_generate_from_embedding(ds, zs, n, 1, NULL, 0, pt, 1, &ko, NULL, NULL, &v) ==
            RCV_ERR_INVALID_ARGUMENT && v == NULL,
        "bad kernel device kind");
  CHECK(strstr(rcv_last_error_message(), "options.device = -3") != NULL, "message: %s",
        rcv_last_error_message());
  free(zs);
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s DATASET_DIR OUT_DIR\n", argv[0]);
    return 2;
  }
  const char *data = argv[1], *out = argv[2];
  char particles[4096], poses[4096], ctf[4096], saved[4096];
  path_join(particles, sizeof particles, data, "particles.32.mrcs");
  path_join(poses, sizeof poses, data, "poses.pkl");
  path_join(ctf, sizeof ctf, data, "ctf.pkl");
  path_join(saved, sizeof saved, out, "saved_model");

  rcv_dataset_options dopts;
  rcv_dataset_options_init(&dopts);
  dopts.particles = particles;
  dopts.poses = poses;
  dopts.ctf = ctf;
  rcv_dataset *ds = NULL;
  OK(rcv_dataset_open(&dopts, &ds));
  if (!ds) return 1;

  size_t zdims[2] = {1, 2};
  rcv_model_options mopts;
  rcv_model_options_init(&mopts);
  mopts.zdims = zdims;
  mopts.n_zdims = 2;
  mopts.memory_option = RCV_MEMORY_LOW;
  /* The CPU, explicitly: the Rust test compares every number with the CPU's, bit for bit. */
  mopts.device = RCV_DEVICE_CPU;
  rcv_model *model = NULL;
  OK(rcv_model_create(ds, &mopts, &model));
  if (!model) return 1;
  device_paths(ds, model);
  rcv_dataset_free(ds); /* the model keeps its own reference */

  /* A cancelled stage returns RCV_ERR_CANCELLED and leaves nothing half done. */
  progress_state cancel = {0, 2, ""};
  CHECK(rcv_model_run_stage(model, RCV_STAGE_MEAN, on_progress, &cancel) == RCV_ERR_CANCELLED,
        "cancellation");
  int32_t done = -1;
  OK(rcv_model_stage_done(model, RCV_STAGE_MEAN, &done));
  CHECK(done == 0, "a cancelled stage is not done");

  const int32_t stages[4] = {RCV_STAGE_MEAN, RCV_STAGE_NOISE, RCV_STAGE_COVARIANCE,
                             RCV_STAGE_EMBEDDING};
  for (int i = 0; i < 4; i++) {
    progress_state ps = {0, 0, ""};
    OK(rcv_model_run_stage(model, stages[i], on_progress, &ps));
    CHECK(ps.calls > 0, "stage %d reported no progress", i);
    OK(rcv_model_stage_done(model, stages[i], &done));
    CHECK(done == 1, "stage %d done", i);
  }
  OK(rcv_model_stage_done(model, RCV_STAGE_ALL, &done));
  CHECK(done == 1, "all stages done");

  size_t n = 0, n_images = 0, n_eigen = 0, n_z = 0;
  double voxel = 0;
  OK(rcv_model_box_size(model, &n));
  OK(rcv_model_voxel_size(model, &voxel));
  OK(rcv_model_n_images(model, &n_images));
  OK(rcv_model_n_eigen(model, &n_eigen));
  OK(rcv_model_n_zdims(model, &n_z));
  CHECK(n == 32 && voxel > 0 && n_images > 0 && n_eigen >= 2 && n_z == 2,
        "sizes %zu %g %zu %zu %zu", n, voxel, n_images, n_eigen, n_z);
  size_t zd[2] = {0, 0};
  OK(rcv_model_zdims(model, zd, 2));
  CHECK(zd[0] == 1 && zd[1] == 2, "zdims %zu %zu", zd[0], zd[1]);

  size_t n3 = n * n * n, nshell = n / 2 - 1;
  float *mean = malloc(n3 * sizeof(float));
  float *eigen0 = malloc(n3 * sizeof(float));
  float *var = malloc(n3 * sizeof(float));
  double *evals = malloc(n_eigen * sizeof(double));
  double *noise = malloc(nshell * sizeof(double));
  size_t zs_len = n_images * 2;
  float *zs = malloc(zs_len * sizeof(float));
  float *prec = malloc(n_images * 4 * sizeof(float));
  float *contrasts = malloc(n_images * sizeof(float));
  OK(rcv_model_mean(model, mean, n3));
  OK(rcv_model_eigenvolume(model, 0, eigen0, n3));
  OK(rcv_model_variance_map(model, 2, var, n3));
  OK(rcv_model_eigenvalues(model, evals, n_eigen));
  OK(rcv_model_noise(model, noise, nshell));
  OK(rcv_model_embedding(model, 2, 1, zs, zs_len, prec, n_images * 4, contrasts, n_images));
  for (size_t k = 1; k < n_eigen; k++) {
    CHECK(evals[k] <= evals[k - 1], "eigenvalues sorted at %zu", k);
  }
  dump(out, "mean.f32", mean, n3 * sizeof(float));
  dump(out, "eigen0.f32", eigen0, n3 * sizeof(float));
  dump(out, "variance2.f32", var, n3 * sizeof(float));
  dump(out, "eigenvalues.f64", evals, n_eigen * sizeof(double));
  dump(out, "noise.f64", noise, nshell * sizeof(double));
  dump(out, "zs2.f32", zs, zs_len * sizeof(float));
  dump(out, "precisions2.f32", prec, n_images * 4 * sizeof(float));
  dump(out, "contrasts2.f32", contrasts, n_images * sizeof(float));

  /* Several threads query the same const model at once. */
  enum { THREADS = 4 };
  pthread_t th[THREADS];
  thread_job jobs[THREADS];
  for (int t = 0; t < THREADS; t++) {
    jobs[t] = (thread_job){model, mean, eigen0, n3, zs_len, zs, 0};
    CHECK(pthread_create(&th[t], NULL, query, &jobs[t]) == 0, "thread %d", t);
  }
  for (int t = 0; t < THREADS; t++) {
    pthread_join(th[t], NULL);
    CHECK(jobs[t].ok, "thread %d saw different answers", t);
  }

  /* A volume at the first image's latent point (zdim 2). */
  rcv_kernel_options kopts;
  rcv_kernel_options_init(&kopts);
  kopts.n_bins = 8;
  kopts.n_min_images = 20;
  rcv_volume *vol = NULL;
  /* A GPU named in the kernel options is chosen for this call: here, one that does not
   * exist. A bad kind is an invalid argument. */
  kopts.device = RCV_DEVICE_CUDA;
  kopts.device_index = 4096;
  CHECK(rcv_model_generate(model, 2, 1, zs, 2, &kopts, NULL, NULL, &vol) == RCV_ERR_DEVICE &&
            vol == NULL,
        "generate on cuda:4096");
  CHECK(strstr(rcv_last_error_message(), "cuda:4096") != NULL, "message: %s",
        rcv_last_error_message());
  kopts.device = 3;
  kopts.device_index = 0;
  CHECK(rcv_model_generate(model, 2, 1, zs, 2, &kopts, NULL, NULL, &vol) ==
            RCV_ERR_INVALID_ARGUMENT && vol == NULL,
        "bad kernel device kind");
  /* An older caller's kernel options (struct_size before `device`, garbage after it): auto,
   * which in rcv_model_generate is the model's device (the CPU, so the Rust test's
   * bit-for-bit comparison holds). */
  kopts.device = 42;
  kopts.device_index = 42;
  kopts.struct_size = offsetof(rcv_kernel_options, device);
  progress_state gp = {0, 0, ""};
  OK(rcv_model_generate(model, 2, 1, zs, 2, &kopts, on_progress, &gp, &vol));
  CHECK(gp.calls > 0, "generation reported no progress");
  if (vol) {
    size_t vn = 0;
    OK(rcv_volume_box_size(vol, &vn));
    CHECK(vn == n, "volume size %zu", vn);
    float *v = malloc(n3 * sizeof(float));
    const int32_t kinds[3] = {RCV_VOLUME_UNFILTERED, RCV_VOLUME_FILTERED,
                              RCV_VOLUME_LOCAL_RESOLUTION};
    const char *names[3] = {"generated_unfil.f32", "generated_filtered.f32",
                            "generated_locres.f32"};
    for (int k = 0; k < 3; k++) {
      OK(rcv_volume_data(vol, kinds[k], v, n3));
      dump(out, names[k], v, n3 * sizeof(float));
    }
    char mrc[4096];
    path_join(mrc, sizeof mrc, out, "generated.mrc");
    OK(rcv_volume_write_mrc(vol, RCV_VOLUME_FILTERED, mrc));
    CHECK(rcv_volume_data(vol, 17, v, n3) == RCV_ERR_INVALID_ARGUMENT, "bad kind");
    free(v);
    rcv_volume_free(vol);
  }
  char mean_mrc[4096];
  path_join(mean_mrc, sizeof mean_mrc, out, "mean.mrc");
  OK(rcv_write_mrc(mean_mrc, mean, n3, n, voxel));
  CHECK(rcv_write_mrc(mean_mrc, mean, n3 - 1, n, voxel) == RCV_ERR_INVALID_ARGUMENT,
        "rcv_write_mrc checks the size");

  /* Save, load, and compare. */
  OK(rcv_model_save(model, saved));
  rcv_model *loaded = NULL;
  OK(rcv_model_load(saved, &loaded));
  if (loaded) {
    float *m2 = malloc(n3 * sizeof(float));
    float *z2 = malloc(zs_len * sizeof(float));
    OK(rcv_model_mean(loaded, m2, n3));
    CHECK(memcmp(m2, mean, n3 * sizeof(float)) == 0, "loaded mean differs");
    OK(rcv_model_eigenvolume(loaded, 0, m2, n3));
    for (size_t i = 0; i < n3; i++) {
      if (m2[i] != eigen0[i]) {
        CHECK(0, "loaded eigenvolume differs at %zu: %g vs %g", i, m2[i], eigen0[i]);
        break;
      }
    }
    OK(rcv_model_embedding(loaded, 2, 1, z2, zs_len, NULL, 0, NULL, 0));
    CHECK(memcmp(z2, zs, zs_len * sizeof(float)) == 0, "loaded embedding differs");
    CHECK(rcv_model_run_stage(loaded, RCV_STAGE_MEAN, NULL, NULL) == RCV_OK,
          "a loaded model has its mean");
    const char *note = NULL;
    OK(rcv_model_device(loaded, &note));
    CHECK(note != NULL && strncmp(note, "device: ", 8) == 0, "loaded model's device: %s",
          note ? note : "");
    free(m2);
    free(z2);
    rcv_model_free(loaded);
  }

  error_paths(model);

  free(mean);
  free(eigen0);
  free(var);
  free(evals);
  free(noise);
  free(zs);
  free(prec);
  free(contrasts);
  rcv_model_free(model);
  if (failures) {
    fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  printf("pipeline through the C ABI: %zu images, %zu eigenvalues, all checks passed\n",
         n_images, n_eigen);
  return 0;
}
