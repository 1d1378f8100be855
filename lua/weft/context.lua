-- weft.context: Go-style contexts (cancellation, deadlines, request values).
--
-- A context is an engine object (bindings/context.c): sending one over a
-- channel or to weft.spawn passes the same context, so cancelling it is seen
-- at once by every goroutine on every processor holding it.
--
--   background()                        -> ctx   never cancelled (also todo())
--   with_cancel(parent)                 -> ctx, cancel
--   with_timeout(parent, seconds)       -> ctx, cancel
--   with_deadline(parent, t)            -> ctx, cancel   t on the weft.now() clock
--   with_value(parent, key, value)      -> ctx
--   cause(ctx)                          -> what cancel(cause) recorded, else ctx:err()
--   ctx:done() -> ch (closed on cancellation; nil for a context that can never
--   be cancelled, as in Go) · ctx:err() · ctx:deadline() -> t|nil · ctx:value(key)
--
-- cancel([cause]) is idempotent; the first cancel's cause is kept. Cancelling
-- a context cancels all its descendants; a child's cancel never touches its
-- parent. A child never outlives its parent's deadline: deadline() reports the
-- earlier of the two. cancel functions are plain Lua closures over the
-- context, so they can be sent to weft.spawn as well.
--
-- Keys of with_value are strings, numbers, booleans (compared by value) or
-- engine objects such as a channel (compared by identity): they mean the same
-- in every VM. A table or function key is refused, its identity would not
-- survive a copy; `weft.chan()` makes a private key. Values are copied like
-- channel messages (tables deep-copied on each value() call, engine objects by
-- reference).

local core = require "weft_core"
local weft = require "weft"

local context = {}

local ctx_mt = core.ctx_mt
local new_cancel, new_deadline, new_value = core.ctx_with_cancel, core.ctx_with_deadline, core.ctx_with_value
local ctx_cancel = core.ctx_cancel
local now = weft.now
local type, getmetatable, error = type, getmetatable, error

local BACKGROUND = core.ctx_background()

-- level: of the caller of the API function, as error() counts.
local function check_parent(parent, what, level)
  if getmetatable(parent) ~= ctx_mt then
    error("weft.context." .. what .. ": parent must be a context, got " .. type(parent), level + 1)
  end
end

local function canceller(ctx)
  return function(cause) ctx_cancel(ctx, cause) end
end

function context.background() return BACKGROUND end
context.todo = context.background

function context.with_cancel(parent)
  check_parent(parent, "with_cancel", 2)
  local ctx = new_cancel(parent)
  return ctx, canceller(ctx)
end

-- with_deadline and with_timeout (which tail-call it: errors are raised
-- at their caller's level): arg is t or seconds, named argname.
local function deadline_child(what, parent, argname, arg, t)
  check_parent(parent, what, 2)
  if type(arg) ~= "number" then
    error("weft.context." .. what .. ": " .. argname .. " must be a number, got " .. type(arg), 2)
  end
  local ctx = new_deadline(parent, t or arg)
  return ctx, canceller(ctx)
end

function context.with_deadline(parent, t)
  return deadline_child("with_deadline", parent, "t", t)
end

function context.with_timeout(parent, seconds)
  return deadline_child("with_timeout", parent, "seconds", seconds,
    type(seconds) == "number" and now() + seconds or nil)
end

function context.with_value(parent, key, value)
  check_parent(parent, "with_value", 2)
  if key == nil then error("weft.context.with_value: key must not be nil", 2) end
  return new_value(parent, key, value)
end

function context.cause(ctx)
  if getmetatable(ctx) ~= ctx_mt then
    error("weft.context.cause: ctx must be a context, got " .. type(ctx), 2)
  end
  return core.ctx_cause(ctx)
end

function context.is_context(v) return getmetatable(v) == ctx_mt end

-- Diagnostics: live uncancelled cancelable children registered with ctx,
-- and contexts alive in the whole process (C objects not yet freed).
context.children = core.ctx_children
context.live = core.ctx_live

return context
