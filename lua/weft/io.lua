-- weft.io: goroutines parked on fd readiness (the netpoller).
--
--   wait(fd, "r"|"w"|"rw" [, timeout]) -> true | nil, "timeout" | nil, "closed"
--       parks the goroutine until fd is readable and/or writable (an error or
--       hang-up counts as ready: the next read or write tells), at most
--       timeout seconds. Any fd works, e.g. one made with FFI code; the wait
--       is an ev_io on the loop of the goroutine's processor, so the
--       processor runs other goroutines meanwhile. "closed": another
--       goroutine of the isolate closed it (weft.net's close() does).
--   lines(fd) -> iterator of the lines read from fd (stdin: 0), without their
--       "\n"; a last line without one is returned too. Before each read it
--       waits for fd to be readable, so a pipe or a terminal never blocks the
--       processor; fd's flags are left alone (stdin is shared with the shell).
--       A read error raises "weft.io.lines: <system message>".
--
-- How a wait blocks (bindings/io.c): the FFI call records it, the goroutine
-- yields OP to the scheduler, which starts it, and once woken the goroutine
-- collects the result. Where Lua cannot yield the recorded wait is dropped
-- and "cannot block here" raised.

local core = require "weft_core"
local weft = require "weft"
local ffi = require "ffi"

local C = ffi.C
local co_yield = coroutine.yield
local OP, CANNOT = core.OP, core.CANNOT
local type, error, tostring, floor = type, error, tostring, math.floor
local find, sub, concat = string.find, string.sub, table.concat
local cannot_block_here, can_yield = weft._cannot_block, weft._can_yield

-- Each declaration on its own: one that the program already made (with the
-- same meaning) must not stop the others.
local function cdef_each(list)
  for i = 1, #list do pcall(ffi.cdef, list[i]) end
end
cdef_each {
  "int weft_lua_io_wait(int fd, int events, double timeout);",
  "int weft_lua_io_finish(void);",
  "int weft_lua_io_wake_closed(int fd);",
  "struct pollfd { int fd; short events; short revents; };",
  "int poll(struct pollfd *fds, unsigned long nfds, int timeout);",
  "ssize_t read(int fd, void *buf, size_t count);",
  "char *strerror(int errnum);",
}

-- Results of bindings/io.c.
local READY, BLOCK, TIMEOUT, CLOSED, NOTG = 0, 2, 3, 4, 5
local EVENTS = { r = 1, w = 2, rw = 3, wr = 3 }
local EINTR, EAGAIN = 4, 11
local io_wait, io_finish = C.weft_lua_io_wait, C.weft_lua_io_finish

local io = {}

-- Parks on fd for events (1 read, 2 write, 3 both) at most timeout seconds
-- (< 0: none): READY, TIMEOUT or CLOSED. what, level: for errors raised at
-- the caller of the API function (level as error() counts from its caller).
local function wait(fd, events, timeout, what, level)
  local rc = io_wait(fd, events, timeout)
  if rc ~= BLOCK then
    if rc == NOTG then
      error(what .. ": not inside a goroutine (start one with weft.run)", level + 1)
    end
    error(what .. ": bad fd " .. tostring(fd), level + 1)
  end
  if not can_yield() or co_yield(OP) == CANNOT then cannot_block_here(level + 1) end
  return io_finish()
end

-- For weft.net: the same wait with an absolute deadline (nil: none).
function io._wait_until(fd, events, deadline, what, level)
  local timeout = -1
  if deadline then
    timeout = deadline - weft.now()
    if timeout <= 0 then return TIMEOUT end
  end
  return wait(fd, events, timeout, what, level + 1)
end
io._READY, io._TIMEOUT, io._CLOSED = READY, TIMEOUT, CLOSED

-- The system's message for errno e, as Go spells them ("connection refused").
function io._strerror(e)
  local s = ffi.string(C.strerror(e))
  return s:sub(1, 1):lower() .. s:sub(2)
end

local function check_fd(fd, what)
  if type(fd) ~= "number" or fd < 0 or fd ~= floor(fd) then
    error("bad argument #1 to '" .. what .. "' (fd must be a non-negative integer, got "
      .. tostring(fd) .. ")", 3)
  end
end

function io.wait(fd, mode, timeout)
  check_fd(fd, "weft.io.wait")
  local events = EVENTS[mode]
  if not events then
    error("bad argument #2 to 'weft.io.wait' (mode must be \"r\", \"w\" or \"rw\", got "
      .. tostring(mode) .. ")", 2)
  end
  if timeout == nil then
    timeout = -1
  elseif type(timeout) ~= "number" or timeout ~= timeout or timeout < 0 then
    error("bad argument #3 to 'weft.io.wait' (timeout must be a non-negative number of seconds, got "
      .. tostring(timeout) .. ")", 2)
  end
  local rc = wait(fd, events, timeout, "weft.io.wait", 2)
  if rc == READY then return true end
  return nil, rc == TIMEOUT and "timeout" or "closed"
end

-- One scratch buffer per VM: nothing yields between a read and its copy.
local CHUNK = 65536
local scratch = ffi.new("uint8_t[?]", CHUNK)
local pfd = ffi.new("struct pollfd[1]")

-- True if fd is readable now (or at EOF, or in error).
local function readable_now(fd)
  pfd[0].fd, pfd[0].events, pfd[0].revents = fd, 1, 0 -- POLLIN
  return C.poll(pfd, 1, 0) > 0
end

-- The next chunk read from fd: a string, or nil at EOF. fd may be blocking
-- (stdin), so it is read only when poll says so, also after a wait: a
-- wake-up does not mean the data is still there (another reader of the
-- pipe may have taken it), and a read of an empty pipe would block the
-- processor.
local function read_chunk(fd)
  while true do
    if readable_now(fd) then
      local n = tonumber(C.read(fd, scratch, CHUNK))
      if n > 0 then return ffi.string(scratch, n) end
      if n == 0 then return nil end
      local e = ffi.errno()
      if e ~= EINTR and e ~= EAGAIN then
        error("weft.io.lines: " .. io._strerror(e), 3)
      end
    elseif wait(fd, 1, -1, "weft.io.lines", 3) == CLOSED then
      return nil
    end
  end
end

function io.lines(fd)
  check_fd(fd, "weft.io.lines")
  local buf, pos, eof = "", 1, false
  -- The pieces of a line longer than what one read brings, joined once at
  -- its end (appending each chunk to the rest would copy it again and again).
  local parts, nparts = {}, 0
  local function joined(last)
    nparts = nparts + 1
    parts[nparts] = last
    local line = concat(parts, "", 1, nparts)
    for i = 1, nparts do parts[i] = nil end
    nparts = 0
    return line
  end
  return function()
    while true do
      local nl = find(buf, "\n", pos, true)
      if nl then
        local line = sub(buf, pos, nl - 1)
        pos = nl + 1
        if nparts > 0 then return joined(line) end
        return line
      end
      if pos <= #buf then
        nparts = nparts + 1
        parts[nparts] = sub(buf, pos)
      end
      buf, pos = "", 1
      if eof then
        if nparts > 0 then return joined("") end
        return nil
      end
      local chunk = read_chunk(fd)
      if chunk then buf = chunk else eof = true end
    end
  end
end

return io
