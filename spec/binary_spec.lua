-- The weft binary: scripts as the main goroutine, arg, options, exit codes.
local function sh(cmd)
  local f = io.popen(cmd .. " 2>&1; echo \"exit=$?\"")
  local out = f:read("*a")
  f:close()
  local body, code = out:match("^(.-)exit=(%d+)%s*$")
  return body, tonumber(code)
end

local function script(text)
  local name = os.tmpname()
  local f = assert(io.open(name, "w"))
  f:write(text)
  f:close()
  return name
end

describe("the weft binary", function()
  it("runs a script as the main goroutine, with arg as luajit sets it", function()
    local s = script([[
      local weft = require "weft"
      local c = weft.chan()
      weft.go(function() c:send(weft.id()) end)
      print(arg[0] ~= nil, arg[1], arg[2], select("#", ...), c:recv(), weft.id())
    ]])
    local out, code = sh("build/weft " .. s .. " one two")
    os.remove(s)
    assert.are.equal(0, code)
    assert.are.equal("true\tone\ttwo\t2\t2\t1\n", out)
  end)

  it("exits 2 with the message and a traceback on an error in any goroutine", function()
    local out, code = sh([[build/weft -e 'local weft = require "weft"
      weft.go(function() error("worker failed") end); weft.sleep(10)']])
    assert.are.equal(2, code)
    assert.matches("error in goroutine 2: %(command line%):2: worker failed", out)
    assert.matches("stack traceback", out)
  end)

  it("ends when main returns although goroutines are blocked", function()
    local out, code = sh([[build/weft -e 'local weft = require "weft"
      local c = weft.chan(); for i = 1, 10 do weft.go(function() c:recv() end) end
      print("bye")']])
    assert.are.equal(0, code)
    assert.are.equal("bye\n", out)
  end)

  it("honours os.exit, -p, --version and --help, and reads stdin", function()
    local _, code = sh("build/weft -e 'os.exit(7)'")
    assert.are.equal(7, code)
    local out = sh("build/weft -p 3 -e 'print(require(\"weft\").procs())'")
    assert.are.equal("3\n", out)
    out, code = sh("build/weft --version")
    assert.are.equal(0, code)
    assert.matches("^weft %d+%.%d+%.%d+\n$", out)
    out, code = sh("build/weft --help")
    assert.are.equal(0, code)
    assert.matches("usage: weft", out)
    out = sh("echo 'print(\"piped\", ...)' | build/weft - x")
    assert.are.equal("piped\tx\n", out)
  end)

  it("reports bad usage and unloadable scripts with exit 1", function()
    local out, code = sh("build/weft -p zero -e 'print(1)'")
    assert.are.equal(1, code)
    assert.matches("%-p wants a number of processors", out)
    out, code = sh("build/weft /nonexistent/script.lua")
    assert.are.equal(1, code)
    assert.matches("cannot open /nonexistent/script.lua", out)
    out, code = sh("build/weft -e 'this is not lua'")
    assert.are.equal(1, code)
  end)
end)
