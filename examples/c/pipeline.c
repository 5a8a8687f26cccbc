/* Run the RECOVAR pipeline through the C ABI and write a volume at a latent point.
 *
 *   recovar make_test_dataset sim --image-size 32 --n-images 500 --discrete-only
 *   cc -std=c11 -I include examples/c/pipeline.c target/release/librecovar.a \
 *      -lpthread -ldl -lm -o pipeline
 *   ./pipeline sim/test_dataset/particles.star volume.mrc
 *
 * The particle file may be any the command line reads: a .star with poses and CTF as
 * here, or a stack with cryoDRGN's poses.pkl and ctf.pkl:
 *   ./pipeline sim/test_dataset/particles.32.mrcs volume.mrc poses.pkl ctf.pkl
 */
#include <stdio.h>
#include <stdlib.h>

#include "recovar.h"

static int32_t report(void *user, const char *stage, uint64_t done, uint64_t total) {
    if (done == total) {
        fprintf(stderr, "  %s: %llu/%llu\n", stage, (unsigned long long)done,
                (unsigned long long)total);
    }
    (void)user;
    return 0; /* non-zero would cancel */
}

static int fail(const char *what) {
    fprintf(stderr, "error: %s: %s\n", what, rcv_last_error_message());
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 3 && argc != 5) {
        fprintf(stderr, "usage: %s particles out.mrc [poses.pkl ctf.pkl]\n", argv[0]);
        return 2;
    }
    printf("librecovar %s\n", rcv_version());

    rcv_dataset_options dopts;
    rcv_dataset_options_init(&dopts);
    dopts.particles = argv[1];
    dopts.poses = argc == 5 ? argv[3] : NULL;
    dopts.ctf = argc == 5 ? argv[4] : NULL;
    rcv_dataset *ds = NULL;
    if (rcv_dataset_open(&dopts, &ds) != RCV_OK) return fail("open");

    size_t zdims[2] = {1, 2};
    rcv_model_options mopts;
    rcv_model_options_init(&mopts);
    mopts.zdims = zdims;
    mopts.n_zdims = 2;
    mopts.memory_option = RCV_MEMORY_LOW; /* small test data: fewer columns */
    /* mopts.device = RCV_DEVICE_CPU;  (default RCV_DEVICE_AUTO: a CUDA GPU when usable) */
    rcv_model *model = NULL;
    rcv_status st = rcv_model_create(ds, &mopts, &model);
    rcv_dataset_free(ds);
    if (st != RCV_OK) return fail("model");
    const char *device = NULL;
    rcv_model_device(model, &device);
    printf("%s\n", device); /* e.g. "device: cpu (8 threads); auto: no usable GPU, ..." */

    const int32_t stages[4] = {RCV_STAGE_MEAN, RCV_STAGE_NOISE, RCV_STAGE_COVARIANCE,
                               RCV_STAGE_EMBEDDING};
    const char *names[4] = {"mean", "noise", "covariance", "embedding"};
    for (int i = 0; i < 4; i++) {
        printf("stage %s\n", names[i]);
        if (rcv_model_run_stage(model, stages[i], report, NULL) != RCV_OK) {
            rcv_model_free(model);
            return fail(names[i]);
        }
    }

    size_t n_eigen = 0, n_images = 0;
    rcv_model_n_eigen(model, &n_eigen);
    rcv_model_n_images(model, &n_images);
    double *evals = malloc(n_eigen * sizeof *evals);
    float *zs = malloc(n_images * 2 * sizeof *zs);
    if (!evals || !zs) return 1;
    rcv_model_eigenvalues(model, evals, n_eigen);
    printf("%zu images; top eigenvalues %.3e %.3e\n", n_images, evals[0], evals[1]);

    /* The latent point: the mean of the 2-D embedding over the first half of the images. */
    rcv_model_embedding(model, 2, 1, zs, n_images * 2, NULL, 0, NULL, 0);
    float point[2] = {0, 0};
    for (size_t i = 0; i < n_images / 2; i++) {
        point[0] += zs[2 * i] / (float)(n_images / 2);
        point[1] += zs[2 * i + 1] / (float)(n_images / 2);
    }
    rcv_kernel_options kopts;
    rcv_kernel_options_init(&kopts);
    rcv_volume *vol = NULL;
    if (rcv_model_generate(model, 2, 1, point, 2, &kopts, report, NULL, &vol) != RCV_OK) {
        rcv_model_free(model);
        return fail("generate");
    }
    st = rcv_volume_write_mrc(vol, RCV_VOLUME_FILTERED, argv[2]);
    rcv_volume_free(vol);
    rcv_model_free(model);
    free(evals);
    free(zs);
    if (st != RCV_OK) return fail("write");
    printf("volume at (%.3f, %.3f) written to %s\n", point[0], point[1], argv[2]);
    return 0;
}
