-- wrk script: every connection's worth of load is one agent cycling fetch -> sell.
--
-- wrk 4.1 does not tell a script which connection a request or response belongs to, so the
-- agent travels in the request instead: each request carries its agent's token and an
-- `X-Request-ID: <agent>:<seq>` header, which both servers echo (web/middleware.py). A
-- response's agent is read back from that header; its next step is queued, and the next
-- free connection of the thread sends it. Each agent thus has at most one request in flight,
-- exactly as if it owned a connection, and there are as many agents as connections.
--
-- Cycle: POST fetch_tickets -> parse the ids with a pattern -> POST sell_tickets with them
-- -> fetch again. A non-200 answer (or a fetch with no tickets) just leads to a new fetch.
--
-- Arguments (after `--`): <tokens file, one per line> <agents per thread>.
-- Thread i (0-based) drives agents i*per+1 .. (i+1)*per of the file.
-- done() prints one line `BENCH_RESULT {json}` for bench/bench.py.

local FETCH = "/api/tickets/fetch_tickets/"
local SELL = "/api/tickets/sell_tickets/"

local threads = {}
local thread_count = 0

function setup(thread)
   thread:set("thread_index", thread_count)
   thread_count = thread_count + 1
   table.insert(threads, thread)
end

-- per-thread state (each thread has its own Lua state)
local fetch_head = {}  -- agent -> its fetch request up to the X-Request-ID's sequence number
local sell_head = {}   -- agent -> the same for its sales
local sell_body = {}   -- agent -> pending sell body, nil when the next step is a fetch
local sent = {}        -- agent -> "fetch" | "sell" (what is in flight)
local sent_seq = {}    -- agent -> seq of its request in flight; nil when it is queued
local queue = {}       -- ring of agents whose next request is ready
local head, tail = 1, 0
local agents = 0
local seq = 0

fetches, sells, fetched_tickets, sold_tickets = 0, 0, 0, 0
fetch_non200, sell_non200, empty_fetches, unmatched, spares = 0, 0, 0, 0, 0
status_401, status_403, status_409, status_429, status_5xx, status_other = 0, 0, 0, 0, 0, 0

local function push(agent)
   tail = tail + 1
   queue[tail] = agent
end

local function pop()
   if head > tail then
      return nil
   end
   local agent = queue[head]
   queue[head] = nil
   head = head + 1
   return agent
end

-- A request's fixed part, built once per agent: wrk.format() built a headers table and
-- formatted each line on every request, in LuaJIT's interpreter (the servers' share of the
-- two cores paid for it). wrk sets the Host header before init() runs.
local function head_for(path, token, agent)
   return "POST " .. path .. " HTTP/1.1\r\nHost: " .. wrk.headers["Host"]
      .. "\r\nAuthorization: Token " .. token .. "\r\nX-Request-ID: " .. agent .. ":"
end

function init(args)
   local path, per = args[1], tonumber(args[2])
   local first = thread_index * per
   local index = 0
   for line in io.lines(path) do
      if index >= first and index < first + per and line ~= "" then
         agents = agents + 1
         fetch_head[agents] = head_for(FETCH, line, agents)
         sell_head[agents] = head_for(SELL, line, agents)
         push(agents)
      end
      index = index + 1
   end
   if agents == 0 then
      error("no tokens for thread " .. thread_index)
   end
end

-- The agent whose request has been in flight the longest: when the queue is empty, a request
-- was lost — wrk calls request() once before the run to check the script (thread 0) and
-- throws that request away, and a socket error loses one too. Resending a fetch is safe
-- (fetch is idempotent).
local function oldest_in_flight()
   local oldest, oldest_seq = 1, math.huge
   for agent = 1, agents do
      local at = sent_seq[agent]
      if at ~= nil and at < oldest_seq then
         oldest, oldest_seq = agent, at
      end
   end
   return oldest
end

function request()
   local agent = pop()
   if agent == nil then
      spares = spares + 1
      agent = oldest_in_flight()
      sell_body[agent] = nil
   end
   seq = seq + 1
   sent_seq[agent] = seq
   local body = sell_body[agent]
   if body ~= nil then
      sell_body[agent] = nil
      sent[agent] = "sell"
      sells = sells + 1
      return sell_head[agent] .. seq .. "\r\nContent-Type: application/json\r\nContent-Length: "
         .. #body .. "\r\n\r\n" .. body
   end
   sent[agent] = "fetch"
   fetches = fetches + 1
   return fetch_head[agent] .. seq .. "\r\nContent-Length: 0\r\n\r\n"
end

local function count_status(status)
   if status == 401 then
      status_401 = status_401 + 1
   elseif status == 403 then
      status_403 = status_403 + 1
   elseif status == 409 then
      status_409 = status_409 + 1
   elseif status == 429 then
      status_429 = status_429 + 1
   elseif status >= 500 then
      status_5xx = status_5xx + 1
   else
      status_other = status_other + 1
   end
end

-- The ids of a fetch's tickets, in order. A plain find for the key and an anchored match
-- for its digits: an unanchored pattern, tried at each of a fetch's ~6,000 body bytes, kept
-- LuaJIT's pattern matcher busy for most of the 53% of wrk's CPU that perf found in LuaJIT,
-- and the servers' share of the two cores paid for it. The key `"id":` appears only as a
-- key: inside a JSON string its quotes would be escaped.
local function ticket_ids(body)
   local ids, at = {}, 1
   while true do
      local _, key_end = string.find(body, '"id":', at, true)
      if key_end == nil then
         return ids
      end
      local id = string.match(body, "^%s*(%d+)", key_end + 1)
      if id ~= nil then
         ids[#ids + 1] = id
      end
      at = key_end + 1
   end
end

function response(status, headers, body)
   local rid = headers["X-Request-ID"] or headers["x-request-id"]
   local agent = rid and tonumber(string.match(rid, "^(%d+):"))
   if agent == nil or fetch_head[agent] == nil then
      unmatched = unmatched + 1
      return
   end
   local what = sent[agent]
   sent_seq[agent] = nil
   if status ~= 200 then
      count_status(status)
      if what == "sell" then
         sell_non200 = sell_non200 + 1
      else
         fetch_non200 = fetch_non200 + 1
      end
   elseif what == "fetch" then
      local ids = ticket_ids(body)
      if #ids > 0 then
         fetched_tickets = fetched_tickets + #ids
         sell_body[agent] = '{"ticket_ids":[' .. table.concat(ids, ",") .. "]}"
      else
         empty_fetches = empty_fetches + 1
      end
   else
      for _ in string.gmatch(body, "%d+") do
         sold_tickets = sold_tickets + 1
      end
   end
   push(agent)
end

local COUNTERS = {
   "fetches", "sells", "fetched_tickets", "sold_tickets", "fetch_non200", "sell_non200",
   "empty_fetches", "unmatched", "spares", "status_401", "status_403", "status_409",
   "status_429", "status_5xx", "status_other",
}

function done(summary, latency, requests)
   local totals = {}
   for _, name in ipairs(COUNTERS) do
      totals[name] = 0
      for _, thread in ipairs(threads) do
         totals[name] = totals[name] + (thread:get(name) or 0)
      end
   end
   local parts = {}
   local function put(name, value)
      parts[#parts + 1] = string.format('"%s":%s', name, value)
   end
   put("duration_us", summary.duration)
   put("requests", summary.requests)
   put("bytes", summary.bytes)
   put("errors_connect", summary.errors.connect)
   put("errors_read", summary.errors.read)
   put("errors_write", summary.errors.write)
   put("errors_status", summary.errors.status)
   put("errors_timeout", summary.errors.timeout)
   put("latency_mean_us", string.format("%.1f", latency.mean))
   put("latency_max_us", latency.max)
   for _, p in ipairs({ 50, 75, 90, 99, 99.9 }) do
      put(string.format("latency_p%s_us", p), latency:percentile(p))
   end
   for _, name in ipairs(COUNTERS) do
      put(name, totals[name])
   end
   io.write("BENCH_RESULT {" .. table.concat(parts, ",") .. "}\n")
end
