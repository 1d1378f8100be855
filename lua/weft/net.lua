-- weft.net: TCP listeners and connections on non-blocking sockets; a call
-- that would block parks its goroutine on the fd (weft.io), never the
-- processor.
--
--   listen("tcp", "host:port") -> ln | nil, err
--       host: an IPv4 or IPv6 address ("[::1]:0"), a name, or empty (all
--       interfaces); port 0 picks a free port (see ln:addr()).
--   ln:accept() -> conn | nil, err    ("closed" once ln is closed, also for
--                                     an accept blocked at that moment)
--   ln:addr() -> "host:port"          ("127.0.0.1:40123", "[::1]:40123")
--   ln:close() -> true | nil, "closed"
--   dial("tcp", "host:port" [, timeout]) -> conn | nil, err
--       tries each address the host resolves to; err: "timeout", or the
--       system's message, e.g. "connection refused".
--   conn:read(n) -> string of 1 to n bytes | nil, err
--       err: "EOF" once the peer closed its side and everything it sent was
--       read (Go's io.EOF), "timeout", "closed" (closed on this side,
--       also for a read blocked at that moment), or the system's message
--       ("connection reset by peer").
--   conn:read_line() -> line | nil, err
--       the next line without its "\n" (and a "\r" before it); at EOF, the
--       last unterminated line, then nil, "EOF". Shares its buffer with read.
--   conn:write(s) -> #s | nil, err, written
--       writes all of s, parking while the socket buffer is full.
--   conn:close() -> true | nil, "closed"
--       after it, every call returns nil, "closed" (data read but not yet
--       taken is dropped).
--   conn:set_deadline(t), conn:set_read_deadline(t), conn:set_write_deadline(t)
--       t: absolute, on the weft.now() clock, or nil for none. A read or
--       write not done by then returns nil, "timeout" (the connection stays
--       usable, nothing read is lost); once t has passed, reads (or writes)
--       fail at once, even with data at hand, until the deadline is moved.
--       A wait already parked keeps the deadline it started with.
--   conn:local_addr(), conn:remote_addr() -> "host:port"
--
-- Listeners and connections belong to the isolate that made them: any
-- goroutine of that isolate may use them (all run on one processor, where
-- the fd waits are). They cannot be sent over a channel or captured by
-- weft.spawn: the copy is refused with "cannot copy userdata at field
-- 'isolate_bound' ...". An unreachable one is closed by the collector.
-- Name resolution (getaddrinfo) is a blocking call; numeric addresses and
-- "localhost" resolve at once.

local weft = require "weft"
local wio = require "weft.io"
local ffi = require "ffi"
local bit = require "bit"

local C = ffi.C
local type, error, tostring, tonumber, setmetatable = type, error, tostring, tonumber, setmetatable
local floor, min, concat = math.floor, math.min, table.concat
local find, sub, match, byte = string.find, string.sub, string.match, string.byte
local ffi_string, errno = ffi.string, ffi.errno
local wait_until, strerror = wio._wait_until, wio._strerror
local READY, TIMEOUT = wio._READY, wio._TIMEOUT
local now = weft.now

for _, d in ipairs {
  "typedef unsigned int socklen_t;",
  "struct sockaddr { unsigned short sa_family; char sa_data[14]; };",
  [[struct addrinfo { int ai_flags; int ai_family; int ai_socktype; int ai_protocol;
      socklen_t ai_addrlen; struct sockaddr *ai_addr; char *ai_canonname;
      struct addrinfo *ai_next; };]],
  "int socket(int domain, int type, int protocol);",
  "int bind(int fd, const struct sockaddr *addr, socklen_t len);",
  "int listen(int fd, int backlog);",
  "int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags);",
  "int connect(int fd, const struct sockaddr *addr, socklen_t len);",
  "int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints, struct addrinfo **res);",
  "void freeaddrinfo(struct addrinfo *res);",
  "const char *gai_strerror(int errcode);",
  "int getsockname(int fd, struct sockaddr *addr, socklen_t *len);",
  "int getpeername(int fd, struct sockaddr *addr, socklen_t *len);",
  "int getsockopt(int fd, int level, int name, void *val, socklen_t *len);",
  "int setsockopt(int fd, int level, int name, const void *val, socklen_t len);",
  "const char *inet_ntop(int af, const void *src, char *dst, socklen_t size);",
  "ssize_t send(int fd, const void *buf, size_t len, int flags);",
  "ssize_t recv(int fd, void *buf, size_t len, int flags);",
  "int close(int fd);",
} do pcall(ffi.cdef, d) end

-- Linux values.
local AF_INET, AF_INET6, SOCK_STREAM = 2, 10, 1
local SOCK_NONBLOCK, SOCK_CLOEXEC = 0x800, 0x80000
local SOL_SOCKET, SO_REUSEADDR, SO_ERROR, IPPROTO_TCP, TCP_NODELAY = 1, 2, 4, 6, 1
local AI_PASSIVE, AI_NUMERICSERV = 0x1, 0x400
local EINTR, EAGAIN, EINPROGRESS, ECONNABORTED = 4, 11, 115, 103
local MSG_NOSIGNAL = 0x4000
local EV_READ, EV_WRITE = 1, 2

-- Scratch space, one per VM: nothing yields while it is in use.
local CHUNK = 65536
local scratch = ffi.new("uint8_t[?]", CHUNK)
local sa = ffi.new("uint8_t[128]")
local salen = ffi.new("socklen_t[1]")
local intv = ffi.new("int[1]")
local intlen = ffi.new("socklen_t[1]")
local ntop = ffi.new("char[64]")
local aires = ffi.new("struct addrinfo *[1]")
local hints = ffi.new("struct addrinfo")

local net = {}

-- ---- addresses -------------------------------------------------------------------

-- "host:port" -> host (nil for ""), port string; or nil, nil, err.
local function split_addr(addr)
  local host, port = match(addr, "^%[(.*)%]:(%d+)$")
  if not host then host, port = match(addr, "^([^:]*):(%d+)$") end
  if not host then return nil, nil, "missing or bad port in address " .. addr end
  if tonumber(port) > 65535 then return nil, nil, "invalid port in address " .. addr end
  return host ~= "" and host or nil, port
end

-- The "host:port" of the sockaddr in sa.
local function format_addr()
  local family = ffi.cast("struct sockaddr *", sa).sa_family
  local port = sa[2] * 256 + sa[3]
  if family == AF_INET6 then
    C.inet_ntop(AF_INET6, sa + 8, ntop, 64)
    return "[" .. ffi_string(ntop) .. "]:" .. port
  end
  C.inet_ntop(AF_INET, sa + 4, ntop, 64)
  return ffi_string(ntop) .. ":" .. port
end

-- The address of obj's socket (getname: C.getsockname or C.getpeername).
local function sock_addr(obj, getname)
  if obj.fd < 0 then return nil, "closed" end
  salen[0] = 128
  if getname(obj.fd, ffi.cast("struct sockaddr *", sa), salen) ~= 0 then
    return nil, strerror(errno())
  end
  return format_addr()
end

-- Resolves host/port; the addrinfo list (free with C.freeaddrinfo) or nil, err.
local function resolve(host, port, passive)
  ffi.fill(hints, ffi.sizeof(hints))
  hints.ai_socktype = SOCK_STREAM
  hints.ai_flags = AI_NUMERICSERV + (passive and AI_PASSIVE or 0)
  local rc = C.getaddrinfo(host, port, hints, aires)
  if rc ~= 0 then return nil, ffi_string(C.gai_strerror(rc)):lower() end
  return aires[0]
end

local function new_socket(family)
  local fd = C.socket(family, bit.bor(SOCK_STREAM, SOCK_NONBLOCK, SOCK_CLOEXEC), 0)
  if fd < 0 then return nil, strerror(errno()) end
  return fd
end

local function setopt(fd, level, name, v)
  intv[0] = v
  C.setsockopt(fd, level, name, intv, ffi.sizeof("int"))
end

-- ---- the fd guard ------------------------------------------------------------------
-- A userdata in each listener and connection: the codec refuses to copy it
-- (so the object cannot leave its isolate), and the collector closes the fd
-- of an object that was never closed.

local function guard(obj)
  local g = newproxy(true)
  getmetatable(g).__gc = function()
    if obj.fd >= 0 then
      C.close(obj.fd)
      obj.fd = -1
    end
  end
  obj.isolate_bound = g
  return obj
end

-- Wakes every goroutine of this isolate parked on obj's fd, then closes it.
local function close_fd(obj)
  local fd = obj.fd
  if fd < 0 then return nil, "closed" end
  obj.fd = -1
  C.weft_lua_io_wake_closed(fd)
  C.close(fd)
  return true
end

local function check_network(network, what)
  if network ~= "tcp" then
    error("bad argument #1 to '" .. what .. "' (network must be \"tcp\", got " .. tostring(network) .. ")", 3)
  end
end

local function check_addr(addr, what)
  if type(addr) ~= "string" then
    error("bad argument #2 to '" .. what .. "' (address must be a \"host:port\" string, got "
      .. type(addr) .. ")", 3)
  end
end

-- ---- connections ------------------------------------------------------------------

local Conn = {}
Conn.__index = Conn
net.Conn = Conn

local function new_conn(fd)
  setopt(fd, IPPROTO_TCP, TCP_NODELAY, 1)
  return guard(setmetatable({ fd = fd, rbuf = "", rdl = false, wdl = false }, Conn))
end

local function check_conn(c, what)
  if getmetatable(c) ~= Conn then
    error("bad argument #1 to '" .. what .. "' (weft.net connection expected, got " .. type(c) .. ")", 3)
  end
end

-- Why c cannot be read now ("closed", "timeout": its read deadline has
-- passed), or nil.
local function read_refused(c)
  if c.fd < 0 then return "closed" end
  local dl = c.rdl
  if dl and now() >= dl then return "timeout" end
  return nil
end

-- Reads once into scratch (parking until readable): n > 0, or nil, err.
local function recv_some(c, n)
  while true do
    local err = read_refused(c)
    if err then return nil, err end
    local fd = c.fd
    local got = tonumber(C.recv(fd, scratch, min(n, CHUNK), 0))
    if got > 0 then return got end
    if got == 0 then return nil, "EOF" end
    local e = errno()
    if e == EAGAIN then
      local rc = wait_until(fd, EV_READ, c.rdl or nil, "conn:read", 3)
      if rc ~= READY then return nil, rc == TIMEOUT and "timeout" or "closed" end
    elseif e ~= EINTR then
      return nil, strerror(e)
    end
  end
end

function Conn:read(n)
  check_conn(self, "read")
  if type(n) ~= "number" or n < 1 or n ~= floor(n) then
    error("bad argument #1 to 'read' (n must be a positive integer, got " .. tostring(n) .. ")", 2)
  end
  local err = read_refused(self)
  if err then return nil, err end
  local rbuf = self.rbuf
  if rbuf ~= "" then
    if #rbuf <= n then
      self.rbuf = ""
      return rbuf
    end
    self.rbuf = sub(rbuf, n + 1)
    return sub(rbuf, 1, n)
  end
  local got
  got, err = recv_some(self, n)
  if not got then return nil, err end
  return ffi_string(scratch, got)
end

-- The line ending at nl in s (without "\r\n" or "\n"), the rest of s kept.
local function take_line(c, s, nl)
  c.rbuf = sub(s, nl + 1)
  return sub(s, 1, nl > 1 and byte(s, nl - 1) == 13 and nl - 2 or nl - 1)
end

-- read_line for a line longer than a chunk: its pieces are gathered in a
-- table and joined once (appending each chunk to the buffer would copy the
-- line again for every chunk). On an error the pieces go back to the buffer.
local function read_long_line(c, head)
  local parts, n = { head }, 1
  while true do
    local got, err = recv_some(c, CHUNK)
    if not got then
      local rest = concat(parts, "", 1, n)
      if err == "EOF" then
        c.rbuf = ""
        return rest
      end
      if c.fd >= 0 then c.rbuf = rest end
      return nil, err
    end
    local chunk = ffi_string(scratch, got)
    local nl = find(chunk, "\n", 1, true)
    if nl then
      c.rbuf = sub(chunk, nl + 1)
      n = n + 1
      parts[n] = sub(chunk, 1, nl - 1)
      local line = concat(parts, "", 1, n)
      -- the "\r" of a "\r\n" (it may end the previous piece)
      if byte(line, -1) == 13 then line = sub(line, 1, -2) end
      return line
    end
    n = n + 1
    parts[n] = chunk
  end
end

function Conn:read_line()
  check_conn(self, "read_line")
  local err = read_refused(self)
  if err then return nil, err end
  local from = 1
  while true do
    local rbuf = self.rbuf
    local nl = find(rbuf, "\n", from, true)
    if nl then return take_line(self, rbuf, nl) end
    if #rbuf >= CHUNK then return read_long_line(self, rbuf) end
    from = #rbuf + 1
    local got
    got, err = recv_some(self, CHUNK)
    if not got then
      if err == "EOF" and rbuf ~= "" then
        self.rbuf = ""
        return rbuf
      end
      return nil, err
    end
    self.rbuf = rbuf .. ffi_string(scratch, got)
  end
end

function Conn:write(s)
  check_conn(self, "write")
  if type(s) ~= "string" then
    error("bad argument #1 to 'write' (string expected, got " .. type(s) .. ")", 2)
  end
  local len, off = #s, 0
  local p = ffi.cast("const char *", s) -- s stays referenced: the pointer stays valid
  while true do
    local fd = self.fd
    if fd < 0 then return nil, "closed", off end
    local dl = self.wdl
    if dl and now() >= dl then return nil, "timeout", off end
    if len == 0 then return 0 end
    local n = tonumber(C.send(fd, p + off, len - off, MSG_NOSIGNAL))
    if n > 0 then
      off = off + n
      if off == len then return len end
    else
      local e = errno()
      if e == EAGAIN then
        local rc = wait_until(fd, EV_WRITE, self.wdl or nil, "conn:write", 2)
        if rc ~= READY then return nil, rc == TIMEOUT and "timeout" or "closed", off end
      elseif e ~= EINTR then
        return nil, strerror(e), off
      end
    end
  end
end

function Conn:close()
  check_conn(self, "close")
  self.rbuf = "" -- what was read but not taken is gone with the connection
  return close_fd(self)
end

local function check_deadline(t, what)
  if t ~= nil and (type(t) ~= "number" or t ~= t) then
    error("bad argument #1 to '" .. what .. "' (t must be a time on the weft.now() clock or nil, got "
      .. tostring(t) .. ")", 3)
  end
  return t or false
end

function Conn:set_deadline(t)
  check_conn(self, "set_deadline")
  t = check_deadline(t, "set_deadline")
  self.rdl, self.wdl = t, t
end

function Conn:set_read_deadline(t)
  check_conn(self, "set_read_deadline")
  self.rdl = check_deadline(t, "set_read_deadline")
end

function Conn:set_write_deadline(t)
  check_conn(self, "set_write_deadline")
  self.wdl = check_deadline(t, "set_write_deadline")
end

function Conn:local_addr()
  check_conn(self, "local_addr")
  return sock_addr(self, C.getsockname)
end

function Conn:remote_addr()
  check_conn(self, "remote_addr")
  return sock_addr(self, C.getpeername)
end

-- ---- listeners -------------------------------------------------------------------

local Listener = {}
Listener.__index = Listener
net.Listener = Listener

local function check_listener(ln, what)
  if getmetatable(ln) ~= Listener then
    error("bad argument #1 to '" .. what .. "' (weft.net listener expected, got " .. type(ln) .. ")", 3)
  end
end

local function listen_on(ai)
  local fd, err = new_socket(ai.ai_family)
  if not fd then return nil, err end
  setopt(fd, SOL_SOCKET, SO_REUSEADDR, 1)
  if C.bind(fd, ai.ai_addr, ai.ai_addrlen) ~= 0 or C.listen(fd, 1024) ~= 0 then
    err = strerror(errno())
    C.close(fd)
    return nil, err
  end
  return fd
end

function net.listen(network, addr)
  check_network(network, "weft.net.listen")
  check_addr(addr, "weft.net.listen")
  local host, port, err = split_addr(addr)
  if err then return nil, err end
  local list
  list, err = resolve(host, port, true)
  if not list then return nil, err end
  local fd
  local ai = list
  while ai ~= nil do
    fd, err = listen_on(ai)
    if fd then break end
    ai = ai.ai_next
  end
  C.freeaddrinfo(list)
  if not fd then return nil, err end
  return guard(setmetatable({ fd = fd }, Listener))
end

function Listener:accept()
  check_listener(self, "accept")
  while true do
    local fd = self.fd
    if fd < 0 then return nil, "closed" end
    local cfd = C.accept4(fd, nil, nil, bit.bor(SOCK_NONBLOCK, SOCK_CLOEXEC))
    if cfd >= 0 then return new_conn(cfd) end
    local e = errno()
    if e == EAGAIN then
      if wait_until(fd, EV_READ, nil, "ln:accept", 2) ~= READY then return nil, "closed" end
    elseif e ~= EINTR and e ~= ECONNABORTED then
      return nil, strerror(e)
    end
  end
end

function Listener:addr()
  check_listener(self, "addr")
  return sock_addr(self, C.getsockname)
end

function Listener:close()
  check_listener(self, "close")
  return close_fd(self)
end

-- ---- dialing ------------------------------------------------------------------------

-- Connects to one address before deadline (false: none): fd or nil, err.
local function connect_to(ai, deadline)
  local fd, err = new_socket(ai.ai_family)
  if not fd then return nil, err end
  if C.connect(fd, ai.ai_addr, ai.ai_addrlen) == 0 then return fd end
  local e = errno()
  if e == EINPROGRESS or e == EINTR then
    -- The wait raises outside a goroutine or where Lua cannot yield: the
    -- socket is closed first.
    local ok, rc = pcall(wait_until, fd, EV_WRITE, deadline or nil, "weft.net.dial", 4)
    if not ok then
      C.close(fd)
      error(rc, 0)
    end
    if rc == READY then
      intlen[0] = ffi.sizeof("int")
      if C.getsockopt(fd, SOL_SOCKET, SO_ERROR, intv, intlen) ~= 0 then
        e = errno()
      else
        e = intv[0]
      end
      if e == 0 then return fd end
      err = strerror(e)
    else
      err = rc == TIMEOUT and "timeout" or "closed"
    end
  else
    err = strerror(e)
  end
  C.close(fd)
  return nil, err
end

function net.dial(network, addr, timeout)
  check_network(network, "weft.net.dial")
  check_addr(addr, "weft.net.dial")
  if timeout ~= nil and (type(timeout) ~= "number" or timeout ~= timeout or timeout < 0) then
    error("bad argument #3 to 'weft.net.dial' (timeout must be a non-negative number of seconds, got "
      .. tostring(timeout) .. ")", 2)
  end
  local deadline = timeout and now() + timeout or false
  local host, port, err = split_addr(addr)
  if err then return nil, err end
  local list
  list, err = resolve(host, port, false)
  if not list then return nil, err end
  -- The addresses are copied out first: the list must be freed even if a
  -- wait below raises (no goroutine, or where Lua cannot yield).
  local addrs = {}
  local ai = list
  while ai ~= nil do
    local buf = ffi.new("uint8_t[?]", ai.ai_addrlen)
    ffi.copy(buf, ai.ai_addr, ai.ai_addrlen)
    addrs[#addrs + 1] = { family = ai.ai_family, addr = buf, len = ai.ai_addrlen }
    ai = ai.ai_next
  end
  C.freeaddrinfo(list)
  for i = 1, #addrs do
    local a = addrs[i]
    local fd
    fd, err = connect_to({ ai_family = a.family, ai_addr = ffi.cast("struct sockaddr *", a.addr),
      ai_addrlen = a.len }, deadline)
    if fd then return new_conn(fd) end
    if err == "timeout" then break end
  end
  return nil, err
end

return net
