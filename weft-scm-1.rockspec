-- luarocks make --lua-version=5.1  (from a checkout; Debian's luarocks, with LuaJIT)
package = "weft"
version = "scm-1"
source = {
  url = "git+https://example.invalid/weft.git",
}
description = {
  summary = "Go-style goroutines, channels, select and timers for LuaJIT on a native scheduler",
  detailed = [[
    weft runs goroutines on a fixed set of processors (OS threads with libev
    loops) with Go's scheduler design, and exposes go, channels, select and
    timers to LuaJIT. Installs the Lua modules, the weft_core C module and the
    weft binary.
  ]],
  license = "MIT",
}
dependencies = {
  "lua == 5.1", -- LuaJIT
}
external_dependencies = {
  LIBEV = { header = "ev.h" },
}
build = {
  type = "make",
  build_variables = {
    CFLAGS = "$(CFLAGS)",
  },
  install_variables = {
    LUADIR = "$(LUADIR)",
    LIBDIR = "$(LIBDIR)",
    BINDIR = "$(BINDIR)",
  },
}
