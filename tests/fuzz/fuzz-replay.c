/* SPDX-License-Identifier: MIT */
/* Replays fuzzer inputs without libFuzzer: every regular file named on the
 * command line, or found in a directory named there, is fed once to
 * LLVMFuzzerTestOneInput. Used by ctest with gcc builds, so that committed
 * corpora and crash inputs stay regression tests everywhere. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int run_file(const char *path) {
        FILE *f = fopen(path, "rbe");
        uint8_t *buf;
        long len;

        if (!f)
                return perror(path), -1;
        fseek(f, 0, SEEK_END);
        len = ftell(f);
        fseek(f, 0, SEEK_SET);
        buf = malloc(len > 0 ? (size_t) len : 1);
        if (!buf || (len > 0 && fread(buf, 1, (size_t) len, f) != (size_t) len)) {
                fclose(f);
                free(buf);
                return fprintf(stderr, "%s: read failed\n", path), -1;
        }
        fclose(f);
        LLVMFuzzerTestOneInput(buf, (size_t) len);
        free(buf);
        return 0;
}

int main(int argc, char **argv) {
        unsigned n = 0;

        for (int i = 1; i < argc; i++) {
                struct stat st;
                if (stat(argv[i], &st) < 0)
                        return perror(argv[i]), 1;
                if (S_ISDIR(st.st_mode)) {
                        struct dirent **names;
                        int k = scandir(argv[i], &names, NULL, alphasort);
                        if (k < 0)
                                return perror(argv[i]), 1;
                        for (int j = 0; j < k; j++) {
                                char p[4096];
                                snprintf(p, sizeof(p), "%s/%s", argv[i], names[j]->d_name);
                                if (names[j]->d_name[0] != '.' && stat(p, &st) == 0 && S_ISREG(st.st_mode)) {
                                        if (run_file(p) < 0)
                                                return 1;
                                        n++;
                                }
                                free(names[j]);
                        }
                        free(names);
                } else {
                        if (run_file(argv[i]) < 0)
                                return 1;
                        n++;
                }
        }
        printf("replayed %u inputs\n", n);
        return n > 0 ? 0 : 1;
}
