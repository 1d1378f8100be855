/*
 * main.c — the `weft` binary: runs a Lua script as the main goroutine.
 *
 *   weft [-p N] [-e code] [script.lua [args...]]
 *
 * `arg` is set as luajit sets it. Exit status: 0 when the main goroutine
 * returns, 2 on an uncaught error in any goroutine (message and traceback on
 * stderr) or a deadlock (the report and a dump), 1 when the script cannot be
 * loaded or the usage is wrong; SIGQUIT prints a dump of every goroutine and
 * exits 2, SIGUSR1 prints one and goes on (engine/sysmon.c);
 * os.exit(n) as usual. The Lua modules are found without any environment:
 * the source tree's lua/ directory, then <prefix>/share/lua/5.1 beside the
 * binary's own <prefix>/bin (wherever it was installed: make install,
 * luarocks), then the default install directory, are put on package.path.
 */
#include "diag.h"
#include "vmalloc.h"
#include "weft.h"

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef WEFT_LUA_DIR
#define WEFT_LUA_DIR "./lua"
#endif
#ifndef WEFT_LUA_INSTALL_DIR
#define WEFT_LUA_INSTALL_DIR "/usr/local/share/lua/5.1"
#endif

int luaopen_weft_core(lua_State *L);

/* <prefix>/share/lua/5.1 for a binary installed as <prefix>/bin/weft, or "". */
static void installed_lua_dir(char *out, size_t size) {
    char exe[4096];
    out[0] = 0;
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return;
    exe[n] = 0;
    char *slash = strrchr(exe, '/');
    if (!slash)
        return;
    *slash = 0; /* <prefix>/bin */
    slash = strrchr(exe, '/');
    if (!slash)
        return;
    *slash = 0; /* <prefix> */
    snprintf(out, size, "%s/share/lua/5.1", exe);
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: weft [options] [script.lua [args...]]\n"
            "  -e code      run code as the main goroutine\n"
            "  -p N         number of processors (default: $WEFT_PROCS or the CPU count)\n"
            "  --version    print the version and exit\n"
            "  --help       print this help and exit\n"
            "With no script and no -e, reads the script from standard input.\n"
            "SIGQUIT prints a dump of every goroutine and exits 2; SIGUSR1 prints one.\n"
            "WEFT_DEBUG=schedtrace=MS[,scheddetail=1][,longrun=MS] traces the scheduler.\n");
}

/* Runs in the VM: ... = procs, code|nil, script|nil; arg is set. */
static const char driver[] =
    "local procs, code, script = ...\n"
    "local chunk, err\n"
    "if code then chunk, err = loadstring(code, '=(command line)')\n"
    "else chunk, err = loadfile(script) end\n"
    "if not chunk then return 'load', err end\n"
    "local weft = require 'weft'\n"
    "local ok, e = pcall(weft.run, { procs = procs > 0 and procs or nil }, chunk, unpack(arg))\n"
    "if not ok then return 'run', e end\n";

int main(int argc, char **argv) {
    int procs = 0, i = 1;
    if (weft_sysmon_signals() != 0)
        fprintf(stderr, "weft: cannot take SIGQUIT and SIGUSR1 (no dumps on signals)\n");
    const char *code = NULL;
    for (; i < argc && argv[i][0] == '-' && argv[i][1]; i++) {
        if (strcmp(argv[i], "--version") == 0 || strcmp(argv[i], "-v") == 0) {
            printf("weft %s\n", WEFT_VERSION);
            return 0;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "-p") == 0 && i + 1 < argc) {
            char *end;
            long n = strtol(argv[++i], &end, 10);
            if (*end || n < 1 || n > 256) {
                fprintf(stderr, "weft: -p wants a number of processors from 1 to 256, got '%s'\n",
                        argv[i]);
                return 1;
            }
            procs = (int)n;
        } else if (strcmp(argv[i], "-e") == 0 && i + 1 < argc) {
            code = argv[++i];
        } else if (strcmp(argv[i], "--") == 0) {
            i++;
            break;
        } else {
            fprintf(stderr, "weft: unknown option '%s'\n", argv[i]);
            usage(stderr);
            return 1;
        }
    }
    const char *script = i < argc ? argv[i] : (code ? NULL : "-");
    int script_index = code ? i - 1 : i;

    lua_State *L = weft_vm_new();
    if (!L) {
        fprintf(stderr, "weft: cannot create a Lua state\n");
        return 1;
    }
    luaL_openlibs(L);

    /* package.preload.weft_core, and the module directories. */
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "preload");
    lua_pushcfunction(L, luaopen_weft_core);
    lua_setfield(L, -2, "weft_core");
    lua_pop(L, 1);
    char beside[4200];
    installed_lua_dir(beside, sizeof beside);
    lua_getfield(L, -1, "path");
    lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;", WEFT_LUA_DIR, WEFT_LUA_DIR);
    if (beside[0])
        lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;", beside, beside);
    else
        lua_pushliteral(L, "");
    lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;%s", WEFT_LUA_INSTALL_DIR, WEFT_LUA_INSTALL_DIR,
                    lua_tostring(L, -3));
    lua_concat(L, 3);
    lua_setfield(L, -3, "path");
    lua_pop(L, 2);

    /* arg, as luajit sets it: arg[0] the script, arg[1..] its arguments. */
    lua_createtable(L, argc - script_index, script_index + 1);
    for (int k = 0; k < argc; k++) {
        lua_pushstring(L, argv[k]);
        lua_rawseti(L, -2, k - script_index);
    }
    lua_setglobal(L, "arg");

    if (luaL_loadbuffer(L, driver, sizeof driver - 1, "=weft") != 0) {
        fprintf(stderr, "weft: %s\n", lua_tostring(L, -1));
        return 1;
    }
    lua_pushinteger(L, procs);
    if (code)
        lua_pushstring(L, code);
    else
        lua_pushnil(L);
    if (script && strcmp(script, "-") != 0)
        lua_pushstring(L, script);
    else
        lua_pushnil(L);
    int status = 0;
    if (lua_pcall(L, 3, 2, 0) != 0) {
        fprintf(stderr, "weft: %s\n", lua_tostring(L, -1));
        status = 1;
    } else if (lua_isstring(L, -2)) {
        const char *kind = lua_tostring(L, -2);
        const char *msg = lua_tostring(L, -1);
        fprintf(stderr, "%s%s\n", strcmp(kind, "load") == 0 ? "weft: " : "",
                msg ? msg : "(error object is not a string)");
        status = strcmp(kind, "load") == 0 ? 1 : 2;
    }
    weft_vm_close(L);
    return status;
}
