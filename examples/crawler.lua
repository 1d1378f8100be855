-- examples/crawler.lua — a fan-out crawler against a local fake web site,
-- with an errgroup limiting the fetches in flight and a context timeout
-- bounding the whole crawl.
--
--   build/weft examples/crawler.lua [timeout_seconds [limit]]
--
-- The fake site runs in an isolate of its own (weft.spawn): it answers each
-- request {url, reply} on a goroutine that sleeps for the page's latency
-- (5 to 50 ms), then sends the page's links on the request's reply channel
-- (channels travel by reference inside tables). The crawler fetches level by
-- level: one errgroup per level, at most `limit` fetches at once, every fetch
-- giving up when the crawl's context is done. When the timeout strikes first,
-- the pages fetched so far are printed and the crawl stops.
local weft = require "weft"
local context = require "weft.context"
local errgroup = require "weft.errgroup"

local TIMEOUT = tonumber(arg and arg[1]) or 0.25
local LIMIT = tonumber(arg and arg[2]) or 4
local PAGES = 60

-- ---- the fake site -------------------------------------------------------------

local function site(requests, npages)
  for req in requests:range() do
    weft.go(function()
      local n = tonumber(req.url:match("^/page/(%d+)$"))
      if not n or n >= npages then
        weft.sleep(0.005)
        req.reply:send({ status = 404 })
        return
      end
      weft.sleep(0.005 + (n * 37 % 10) * 0.005)
      req.reply:send({
        status = 200,
        title = "Page " .. n,
        links = { "/page/" .. (n * 7 + 1) % npages, "/page/" .. (n * 3 + 2) % npages, "/page/" .. (n + 1) },
      })
    end)
  end
end

-- GET url from the site, or nil, err when ctx is done first.
local function fetch(ctx, requests, url)
  local reply = weft.chan(1) -- room for a late answer nobody waits for
  local sent = weft.select(weft.send(requests, { url = url, reply = reply }), weft.recv(ctx:done()))
  if sent ~= 1 then return nil, ctx:err() end
  local which, page = weft.select(weft.recv(reply), weft.recv(ctx:done()))
  if which ~= 1 then return nil, ctx:err() end
  return page
end

-- ---- the crawler -------------------------------------------------------------------

local function crawl(requests, timeout, limit)
  local ctx, cancel = context.with_timeout(context.background(), timeout)
  local seen, pages, order = { ["/page/0"] = true }, {}, {}
  local level, depth, err = { "/page/0" }, 0, nil
  while #level > 0 and not err do
    local g, gctx = errgroup.new(ctx)
    g:limit(limit)
    local next_level = {}
    for _, url in ipairs(level) do
      g:go(function()
        local page, ferr = fetch(gctx, requests, url)
        if not page then return nil, ferr end
        pages[url] = page
        order[#order + 1] = url
        for _, link in ipairs(page.links or {}) do
          if not seen[link] then
            seen[link] = true
            next_level[#next_level + 1] = link
          end
        end
      end)
    end
    err = g:wait()
    level, depth = next_level, depth + 1
  end
  cancel()
  return order, pages, err, depth
end

weft.run(function()
  local requests = weft.chan()
  weft.spawn(site, requests, PAGES)
  local t0 = weft.now()
  local order, pages, err = crawl(requests, TIMEOUT, LIMIT)
  local elapsed = weft.now() - t0
  local found, missing = 0, 0
  for _, url in ipairs(order) do
    if pages[url].status == 200 then found = found + 1 else missing = missing + 1 end
  end
  if err then
    print(("crawl stopped after %.0f ms: %s; partial results:"):format(elapsed * 1e3, err))
  else
    print(("crawl finished in %.0f ms:"):format(elapsed * 1e3))
  end
  for i, url in ipairs(order) do
    local p = pages[url]
    io.write(("  %-9s %-8s"):format(url, p.status == 200 and p.title or "404"), i % 4 == 0 and "\n" or "")
  end
  print(("\n%d pages, %d not found, limit %d, timeout %.2f s"):format(found, missing, LIMIT, TIMEOUT))
  requests:close()
end)
