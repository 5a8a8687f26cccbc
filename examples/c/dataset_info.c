/* Open a particle file through the C ABI and print its size.
 *   cc -std=c11 -I include examples/c/dataset_info.c target/release/librecovar.a \
 *      -lpthread -ldl -lm -o dataset_info
 *   ./dataset_info particles.star [poses.pkl ctf.pkl]
 */
#include <stdio.h>

#include "recovar.h"

int main(int argc, char **argv) {
    rcv_dataset_options opts;
    rcv_dataset *ds = NULL;
    size_t n = 0, d = 0;
    double apix = 0.0;

    if (argc < 2) {
        fprintf(stderr, "usage: %s particles [poses.pkl ctf.pkl]\n", argv[0]);
        return 2;
    }
    rcv_dataset_options_init(&opts);
    opts.particles = argv[1];
    opts.poses = argc > 2 ? argv[2] : NULL;
    opts.ctf = argc > 3 ? argv[3] : NULL;
    if (rcv_dataset_open(&opts, &ds) != RCV_OK) {
        fprintf(stderr, "error: %s\n", rcv_last_error_message());
        return 1;
    }
    rcv_dataset_count(ds, &n);
    rcv_dataset_box_size(ds, &d);
    rcv_dataset_voxel_size(ds, &apix);
    printf("recovar %s: %zu images of %zu x %zu px at %.4f A/px\n", rcv_version(), n, d, d, apix);
    rcv_dataset_free(ds);
    return 0;
}
