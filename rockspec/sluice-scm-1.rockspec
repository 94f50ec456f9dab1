rockspec_format = "3.0"
package = "sluice"
version = "scm-1"
source = {
  url = "git+file:///dev/null", -- replaced when published; `luarocks make` builds the checkout
}
description = {
  summary = "Lua-scriptable network flow processing: pcap -> flows -> slices -> Lua policies",
  detailed = [[
A C core reads packet captures, tracks bidirectional flows and cuts them into
time slices; LuaJIT policies receive flow events and slice batches through
the FFI, zero-copy, and route them to sinks such as JSON lines.]],
  license = "MIT",
}
dependencies = {
  "luajit >= 2.0",
}
build = {
  type = "make",
  build_target = "all",
  install_target = "install",
  build_variables = {
    CFLAGS = "$(CFLAGS)",
  },
  install_variables = {
    INST_LIBDIR = "$(LIBDIR)",
    INST_LUADIR = "$(LUADIR)",
    INST_BINDIR = "$(BINDIR)",
  },
}
