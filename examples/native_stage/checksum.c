/*
 * examples/native_stage/checksum.c — a C stage of a Lua pipeline: a native
 * goroutine (its own stack, the C API of weft.h) that receives strings from
 * Lua goroutines, computes their Adler-32 checksum and sends it back as a
 * number. Built by `make` as build/examples/native_stage.so; driven by
 * pipeline.lua beside it:
 *
 *   weft.go_native(stage.checksum_stage, input, output)
 *
 * The stage gets {input, output, NULL} and closes output once input is
 * closed and drained.
 */
#include "weft.h"

#include <stdint.h>

static uint32_t adler32(const unsigned char *p, size_t n) {
    uint32_t a = 1, b = 0;
    for (size_t i = 0; i < n; i++) {
        a = (a + p[i]) % 65521;
        b = (b + a) % 65521;
    }
    return (b << 16) | a;
}

void checksum_stage(void *arg) {
    weft_chan **chans = arg;
    weft_chan *input = chans[0], *output = chans[1];
    weft_val v;
    while (weft_chan_recv(input, &v) == 1) {
        double sum = -1; /* not a string */
        if (v.tag == WEFT_TAG_RAW)
            sum = adler32(weft_val_data(&v), v.len);
        weft_val_free(&v);
        if (weft_chan_send(output, weft_val_num(sum)) != WEFT_OK)
            break;
    }
    weft_chan_close(output);
}
