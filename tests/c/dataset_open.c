/*
 * Opens cryoDRGN fixtures through the C ABI and checks counts, sizes and error paths.
 * Usage: dataset_open <path-to-shared/data/cryodrgn_fixtures>
 * Built and run by ffi/tests/c_api.rs with -std=c11 -Wall -Wextra -Werror -pedantic.
 */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "recovar.h"

static int failures = 0;

#define CHECK(cond, ...)                                          \
    do {                                                          \
        if (!(cond)) {                                            \
            fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, \
                    __LINE__, #cond);                             \
            fprintf(stderr, __VA_ARGS__);                         \
            fprintf(stderr, "\n");                                \
            failures++;                                           \
        }                                                         \
    } while (0)

static void join(char *out, size_t n, const char *dir, const char *name) {
    snprintf(out, n, "%s/%s", dir, name);
}

int main(int argc, char **argv) {
    char particles[4096], poses[4096], ctf[4096];
    rcv_dataset_options opts;
    rcv_dataset *ds = NULL;
    rcv_status st;
    size_t n = 0, d = 0;
    double apix = 0.0;

    if (argc != 2) {
        fprintf(stderr, "usage: %s <cryodrgn_fixtures dir>\n", argv[0]);
        return 2;
    }
    CHECK(strlen(rcv_version()) > 0, "empty version");
    CHECK(rcv_abi_version() == RCV_ABI_VERSION, "ABI mismatch");
    CHECK(rcv_last_error_message() != NULL, "last error must never be NULL");

    /* A RELION 3.1 star file: images, poses and CTF all come from it. */
    join(particles, sizeof particles, argv[1], "relion31.star");
    rcv_dataset_options_init(&opts);
    opts.particles = particles;
    opts.flags = RCV_DATASET_REQUIRE_POSES | RCV_DATASET_REQUIRE_CTF;
    st = rcv_dataset_open(&opts, &ds);
    CHECK(st == RCV_OK, "open relion31.star: %d %s", (int)st, rcv_last_error_message());
    if (st == RCV_OK) {
        CHECK(rcv_dataset_count(ds, &n) == RCV_OK && n == 5, "count %zu", n);
        CHECK(rcv_dataset_box_size(ds, &d) == RCV_OK && d == 256, "box %zu", d);
        CHECK(rcv_dataset_voxel_size(ds, &apix) == RCV_OK && fabs(apix - 2.806) < 1e-4,
              "apix %f", apix);
    }
    rcv_dataset_free(ds);
    ds = NULL;

    /* A plain stack with a poses pickle, the first 10 images only. */
    join(particles, sizeof particles, argv[1], "hand.mrcs");
    join(poses, sizeof poses, argv[1], "hand_rot_trans.pkl");
    rcv_dataset_options_init(&opts);
    opts.particles = particles;
    opts.poses = poses;
    opts.n_images = 10;
    st = rcv_dataset_open(&opts, &ds);
    CHECK(st == RCV_OK, "open hand.mrcs: %d %s", (int)st, rcv_last_error_message());
    if (st == RCV_OK) {
        CHECK(rcv_dataset_count(ds, &n) == RCV_OK && n == 10, "count %zu", n);
        CHECK(rcv_dataset_box_size(ds, &d) == RCV_OK && d == 64, "box %zu", d);
    }
    rcv_dataset_free(ds);
    ds = NULL;

    /* Error: a missing particle file; the message names it. */
    join(particles, sizeof particles, argv[1], "no_such_file.mrcs");
    rcv_dataset_options_init(&opts);
    opts.particles = particles;
    st = rcv_dataset_open(&opts, &ds);
    CHECK(st == RCV_ERR_IO, "missing file gave %d", (int)st);
    CHECK(ds == NULL, "handle must be NULL on error");
    CHECK(strstr(rcv_last_error_message(), "no_such_file.mrcs") != NULL, "message: %s",
          rcv_last_error_message());

    /* Error: 1000 poses for 100 images. */
    join(particles, sizeof particles, argv[1], "hand.mrcs");
    join(poses, sizeof poses, argv[1], "toy_angles.pkl");
    rcv_dataset_options_init(&opts);
    opts.particles = particles;
    opts.poses = poses;
    st = rcv_dataset_open(&opts, &ds);
    CHECK(st == RCV_ERR_INCONSISTENT, "count mismatch gave %d: %s", (int)st,
          rcv_last_error_message());
    CHECK(strstr(rcv_last_error_message(), "1000") != NULL, "message: %s",
          rcv_last_error_message());

    /* Error: a CTF pickle that is a pose pickle. */
    join(ctf, sizeof ctf, argv[1], "hand_rot_trans.pkl");
    rcv_dataset_options_init(&opts);
    opts.particles = particles;
    opts.ctf = ctf;
    st = rcv_dataset_open(&opts, &ds);
    CHECK(st == RCV_ERR_FORMAT, "wrong pickle gave %d: %s", (int)st, rcv_last_error_message());

    /* Error: NULL arguments and bad option values. */
    CHECK(rcv_dataset_open(NULL, &ds) == RCV_ERR_INVALID_ARGUMENT, "NULL options");
    CHECK(rcv_dataset_open(&opts, NULL) == RCV_ERR_INVALID_ARGUMENT, "NULL out");
    opts.flags = 1u << 30;
    CHECK(rcv_dataset_open(&opts, &ds) == RCV_ERR_INVALID_ARGUMENT, "unknown flag");
    opts.flags = 0;
    opts.uninvert = 7;
    CHECK(rcv_dataset_open(&opts, &ds) == RCV_ERR_INVALID_ARGUMENT, "bad uninvert value");
    CHECK(strstr(rcv_last_error_message(), "RCV_UNINVERT") != NULL, "message: %s",
          rcv_last_error_message());
    opts.uninvert = RCV_UNINVERT_TRUE;

    /* An older caller whose options struct ends before `halfsets`: fields it does not
       know take their defaults. */
    join(particles, sizeof particles, argv[1], "hand.mrcs");
    rcv_dataset_options_init(&opts);
    opts.particles = particles;
    opts.struct_size = offsetof(rcv_dataset_options, halfsets);
    opts.n_images = 3; /* beyond the old struct: must be ignored */
    st = rcv_dataset_open(&opts, &ds);
    CHECK(st == RCV_OK, "old struct_size: %d %s", (int)st, rcv_last_error_message());
    if (st == RCV_OK) {
        CHECK(rcv_dataset_count(ds, &n) == RCV_OK && n == 100, "count %zu", n);
    }
    rcv_dataset_free(ds);
    ds = NULL;
    CHECK(rcv_dataset_count(NULL, &n) == RCV_ERR_INVALID_ARGUMENT, "NULL dataset");
    rcv_dataset_free(NULL);

    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("C ABI checks passed\n");
    return 0;
}
