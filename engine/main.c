/*
 * main.c — the `weft` binary. Until the Lua layer lands it reports its
 * version and usage; running scripts arrives with the LuaJIT bindings.
 */
#include "weft.h"

#include <stdio.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f,
            "usage: weft [options] [script.lua [args...]]\n"
            "  -e code      run code as the main goroutine\n"
            "  -p N         number of processors (default: $WEFT_PROCS or the CPU count)\n"
            "  --version    print the version and exit\n"
            "  --help       print this help and exit\n");
}

int main(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "--version") == 0) {
        printf("weft %s\n", WEFT_VERSION);
        return 0;
    }
    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "weft: running Lua scripts is not available in this build yet\n");
    usage(stderr);
    return 2;
}
