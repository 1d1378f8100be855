/*
 * bindings/diag.c — what the Lua host adds to the engine's diagnostics
 * (engine/diag.h): a Lua goroutine's name, traceback and creation site in
 * dumps, the label of a goroutine the watchdog finds running too long, VM
 * memory; and the Lua functions core.dump, core.stats, core.run_timeout,
 * core.fail.
 *
 * Invariants: a suspended coroutine's stack is read only by its own
 * processor's thread (describe is called by the engine there, between two
 * runs). The watchdog reads the running goroutine's hostg from another
 * thread (label): it holds labellock, and finds the hostg through the
 * processor's `running` slot, checked against the goroutine id it asks
 * about. A hostg is only freed after weft_hdiag_forget (which clears its
 * slot under labellock), and names are only replaced or freed under
 * labellock, so what label reads stays allocated. The creation site is
 * written only when a hostg starts a new goroutine (the slot's id then no
 * longer matches). labellock is a leaf.
 */
#include "host.h"

#include "diag.h"

#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static weft_mutex labellock = WEFT_MUTEX_INIT;
static struct {
    _Atomic(hostg *) h;
    _Atomic int64_t gid;
} running[WEFT_MAX_PROCS];

/* The source prefix of weft's own Lua modules (frames not shown). */
static char libdir[512];
static atomic_int libdir_state; /* 0 unset, 1 being set, 2 set */

/* ---- records kept for dumps --------------------------------------------------- */

/* Creation sites are file names, few and repeated for every weft.go: each is
 * kept once for the life of the process (sitelock, a leaf), and each thread
 * remembers the last one it looked up, so a goroutine carries a pointer, not
 * a copy. */
enum { SITES_MAX = 4096 };
static weft_mutex sitelock = WEFT_MUTEX_INIT;
static char *sites[SITES_MAX];
static int nsites;
static _Thread_local struct {
    char src[LUA_IDSIZE];
    const char *kept;
} lastsite;

static const char *site_intern(const char *src) {
    if (lastsite.kept && strcmp(lastsite.src, src) == 0)
        return lastsite.kept;
    const char *kept = "?";
    weft_mutex_lock(&sitelock);
    int i = 0;
    while (i < nsites && strcmp(sites[i], src) != 0)
        i++;
    if (i < nsites)
        kept = sites[i];
    else if (nsites < SITES_MAX && (sites[nsites] = strdup(src)) != NULL)
        kept = sites[nsites++];
    weft_mutex_unlock(&sitelock);
    size_t n = strnlen(src, sizeof lastsite.src - 1);
    memcpy(lastsite.src, src, n);
    lastsite.src[n] = 0;
    lastsite.kept = kept;
    return kept;
}

void weft_hdiag_site(lua_State *L, int level, hostg *h) {
    lua_Debug ar;
    if (lua_getstack(L, level, &ar) && lua_getinfo(L, "Sl", &ar) && ar.currentline > 0) {
        /* no formatting here: this runs for every weft.go */
        h->site = site_intern(ar.short_src);
        h->site_line = ar.currentline;
    } else {
        h->site = "[C]";
        h->site_line = 0;
    }
}

void weft_hdiag_running(int pid, int64_t gid, hostg *h) {
    atomic_store_explicit(&running[pid].h, h, memory_order_relaxed);
    atomic_store_explicit(&running[pid].gid, gid, memory_order_release);
}

void weft_hdiag_set_name(hostg *h, char *name) {
    weft_mutex_lock(&labellock);
    free(h->name);
    h->name = name;
    weft_mutex_unlock(&labellock);
}

void weft_hdiag_forget(hostg *h) {
    weft_mutex_lock(&labellock);
    if (h->vm >= 0 && atomic_load(&running[h->vm].h) == h) {
        atomic_store(&running[h->vm].gid, 0);
        atomic_store(&running[h->vm].h, NULL);
    }
    free(h->name);
    h->name = NULL;
    weft_mutex_unlock(&labellock);
}

/* ---- the engine's hooks ------------------------------------------------------------ */

static bool lib_frame(const lua_Debug *ar) {
    if (atomic_load_explicit(&libdir_state, memory_order_acquire) != 2)
        return false;
    return strncmp(ar->source, libdir, strlen(libdir)) == 0;
}

static void frame_line(weft_dbuf *b, const lua_Debug *ar) {
    if (ar->currentline > 0)
        weft_dbuf_printf(b, "\t%s:%d: ", ar->short_src, ar->currentline);
    else
        weft_dbuf_printf(b, "\t%s: ", ar->short_src);
    if (*ar->namewhat)
        weft_dbuf_printf(b, "in function '%s'\n", ar->name);
    else if (*ar->what == 'm')
        weft_dbuf_puts(b, "in main chunk\n");
    else if (*ar->what == 'C')
        weft_dbuf_puts(b, "in a C function\n");
    else
        weft_dbuf_printf(b, "in function <%s:%d>\n", ar->short_src, ar->linedefined);
}

static void name_line(hostg *h, weft_dbuf *b) {
    if (h->name)
        weft_dbuf_printf(b, "name: %s\n", h->name);
}

static void created_line(hostg *h, int64_t parent, weft_dbuf *b) {
    if (h->main || !h->site || !h->site[0])
        return;
    weft_dbuf_printf(b, "created by %s", h->site);
    if (h->site_line > 0)
        weft_dbuf_printf(b, ":%d", h->site_line);
    weft_dbuf_printf(b, " in goroutine %lld\n", (long long)parent);
}

/* g's lines after its header: name, the frames below weft's own (the
 * innermost is where it parked), creation site. */
static void describe(weft_g *g, bool self, weft_dbuf *b) {
    hostg *h = g->host;
    (void)self;
    name_line(h, b);
    if (!h->co) {
        weft_dbuf_puts(b, "\t(isolate not started yet)\n");
    } else {
        lua_Debug ar;
        bool user = false;
        int shown = 0;
        for (int level = 0; lua_getstack(h->co, level, &ar); level++) {
            if (!lua_getinfo(h->co, "Sln", &ar))
                break;
            if (lib_frame(&ar) || (!user && *ar.what == 'C'))
                continue; /* weft's own frames, and the yield it parked in */
            user = true;
            if (++shown > 20) {
                weft_dbuf_puts(b, "\t...\n");
                break;
            }
            frame_line(b, &ar);
        }
        if (!user)
            weft_dbuf_puts(b, "\t(no Lua frames)\n");
    }
    created_line(h, g->parent_id, b);
}

static void label(weft_proc *p, int64_t gid, weft_dbuf *b) {
    weft_mutex_lock(&labellock);
    if (atomic_load_explicit(&running[p->id].gid, memory_order_acquire) == gid) {
        hostg *h = atomic_load_explicit(&running[p->id].h, memory_order_relaxed);
        weft_g *g = NULL;
        weft_mutex_lock(&weft_S.alllock);
        for (size_t i = 0; i < weft_S.nallgs && !g; i++)
            if (weft_S.allgs[i]->id == gid)
                g = weft_S.allgs[i];
        weft_mutex_unlock(&weft_S.alllock);
        if (h) {
            name_line(h, b);
            created_line(h, g ? g->parent_id : 0, b);
        }
    }
    weft_mutex_unlock(&labellock);
}

static double vm_kb(weft_proc *p) {
    lua_State *L = weft_host_vm(p->id);
    if (!L)
        return -1;
    return lua_gc(L, LUA_GCCOUNT, 0) + lua_gc(L, LUA_GCCOUNTB, 0) / 1024.0;
}

/* ---- Lua functions ------------------------------------------------------------------ */

/* core.dump([exclude_id]) -> string | nil (no engine) */
static int l_dump(lua_State *L) {
    char *s = weft_diag_dump((int64_t)luaL_optnumber(L, 1, 0));
    if (!s)
        return 0;
    lua_pushstring(L, s);
    free(s);
    return 1;
}

static void kb_of(weft_proc *p, void *arg) {
    ((double *)arg)[p->id] = vm_kb(p);
}

static void setnum(lua_State *L, const char *k, double v) {
    lua_pushnumber(L, v);
    lua_setfield(L, -2, k);
}

/* core.stats() -> table | nil (no engine) */
static int l_stats(lua_State *L) {
    weft_stats st;
    if (weft_stats_get(&st) != WEFT_OK)
        return 0;
    int64_t counts[5];
    weft_diag_gcounts(counts);
    double kb[WEFT_MAX_PROCS]; /* not static: two goroutines may ask at once */
    bool answered[WEFT_MAX_PROCS];
    if (!weft_diag_onall(kb_of, kb, answered))
        return 0;
    lua_newtable(L);
    setnum(L, "goroutines", (double)st.goroutines);
    lua_newtable(L);
    setnum(L, "running", (double)counts[WEFT_G_RUNNING]);
    setnum(L, "runnable", (double)counts[WEFT_G_RUNNABLE]);
    setnum(L, "waiting", (double)counts[WEFT_G_WAITING]);
    lua_setfield(L, -2, "by_state");
    setnum(L, "idle_procs", st.idle_procs);
    setnum(L, "spinning", st.spinning);
    setnum(L, "global_runq", st.global_runq);
    setnum(L, "switches", (double)st.switches);
    setnum(L, "steals", (double)st.steals);
    setnum(L, "chan_ops", (double)st.chan_ops);
    setnum(L, "timers_fired", (double)st.timers_fired);
    double timers = 0, mem = 0;
    lua_createtable(L, st.procs, 0);
    for (int i = 0; i < st.procs; i++) {
        weft_proc_stats ps;
        weft_proc_stats_get(i, &ps);
        lua_newtable(L);
        setnum(L, "id", i);
        setnum(L, "runq", ps.runq);
        setnum(L, "inbox", atomic_load(&weft_S.procs[i]->inboxn));
        setnum(L, "switches", (double)ps.switches);
        setnum(L, "steals", (double)ps.steals);
        setnum(L, "chan_ops", (double)atomic_load(&weft_S.procs[i]->st_chanops));
        setnum(L, "timers", ps.timers);
        setnum(L, "timers_fired", (double)ps.timers_fired);
        if (answered[i] && kb[i] >= 0) {
            setnum(L, "memory_kb", kb[i]);
            mem += kb[i];
        }
        timers += ps.timers;
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "procs");
    setnum(L, "timers", timers);
    setnum(L, "memory_kb", mem);
    return 1;
}

/* core.run_timeout(seconds): the next weft.run's timeout (0: none). */
static int l_run_timeout(lua_State *L) {
    weft_diag_set_timeout(luaL_checknumber(L, 1));
    return 0;
}

/* core.fail(msg): stops the engine with msg as weft.run's error. */
static int l_fail(lua_State *L) {
    char *s = strdup(luaL_checkstring(L, 1));
    if (!s)
        return luaL_error(L, "out of memory");
    weft_host_fail(s);
    return 0;
}

/* core.diag_libdir(source): frames whose source starts with it are weft's
 * own and not shown in dumps (the first VM to call sets it). */
static int l_diag_libdir(lua_State *L) {
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    int unset = 0;
    if (n < sizeof libdir && atomic_compare_exchange_strong(&libdir_state, &unset, 1)) {
        memcpy(libdir, s, n + 1);
        atomic_store_explicit(&libdir_state, 2, memory_order_release);
    }
    return 0;
}

static void set_hooks(void) {
    weft_diag_host.describe = describe;
    weft_diag_host.label = label;
    weft_diag_host.vm_kb = vm_kb;
    weft_diag_host.fail = weft_host_fail;
}

void weft_diag_register(lua_State *L) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, set_hooks);
    static const luaL_Reg fns[] = {{"dump", l_dump},
                                   {"stats", l_stats},
                                   {"run_timeout", l_run_timeout},
                                   {"fail", l_fail},
                                   {"diag_libdir", l_diag_libdir},
                                   {NULL, NULL}};
    luaL_register(L, NULL, fns);
}
