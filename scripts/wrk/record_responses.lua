-- wrk script: POST /record_responses with BATCH new responses per request (issue 16's
-- ingest benchmark, BENCHMARKS.md).
--
--   wrk -t4 -c32 -d20s -s scripts/wrk/record_responses.lua http://127.0.0.1:PORT \
--       -- RUN COURSES_PER_THREAD BATCH TOKEN
--
-- Each wrk thread owns COURSES_PER_THREAD courses of its own and sends them round-robin:
-- a course's first request is its /create_course (sequence 0), every later one a
-- /record_responses of BATCH responses with the course's next sequence numbers, so no
-- request conflicts with another and none is a duplicate. Every uuid is derived from
-- (RUN, thread, counter): use a new RUN per run against the same server. At the end it
-- prints one JSON line with what was acknowledged (200s), which scripts/wrk/count_back.py
-- checks against the server's fetch_course_events.

local threads = {}
local next_thread_id = 0

function setup(thread)
  thread:set("thread_id", next_thread_id)
  next_thread_id = next_thread_id + 1
  table.insert(threads, thread)
end

-- A uuid (version 4 layout) from the run, a kind, this thread and a counter. Every
-- 16-bit group depends on all three (a multiply-add mod 2^16 per group), so that the ids
-- spread like random ones over whatever the server hashes them into; count_back.py
-- derives the same course uuids.
local multipliers = {40503, 9973, 52433, 30011, 61651, 12289, 47653, 23173}

local function group(k, seed)
  return (seed * multipliers[k] + k * 7919) % 65536
end

local function make_uuid(kind, n)
  local seed = (n * 131 + thread_id * 65537 + run * 257 + kind * 8191) % 4294967296
  local g = {}
  for k = 1, 8 do
    g[k] = group(k, seed % 65536 + math.floor(seed / 65536) * (k + 1))
  end
  return string.format("%04x%04x-%04x-4%03x-8%03x-%04x%04x%04x", g[1], g[2], g[3],
    g[4] % 4096, g[5] % 4096, g[6], g[7], g[8])
end

function init(args)
  run = tonumber(args[1] or "1")
  courses_per_thread = tonumber(args[2] or "50")
  batch = tonumber(args[3] or "10")
  token = args[4] or ""
  next_course = 0
  next_sequence = {}
  response_counter = 0
  -- What the server acknowledged, read from each 200's body (wrk does not say which
  -- request an answer belongs to).
  acked_responses = 0
  acked_creates = 0
  refused = 0
end

local function course_uuid(index)
  return make_uuid(1, index)
end

local headers = {}

function request()
  -- wrk calls the first thread's request() once to check it, without sending what it
  -- returns: the first request of every thread is a harmless /ping, so that no course
  -- misses its create.
  if not primed then
    primed = true
    return wrk.format("GET", "/ping")
  end
  local index = next_course % courses_per_thread
  next_course = next_course + 1
  headers["Content-Type"] = "application/json"
  headers["Biglearn-Api-Token"] = token
  local course = course_uuid(index)
  local sequence = next_sequence[index]
  if sequence == nil then
    next_sequence[index] = 1
    local body = string.format(
      '{"course_uuid":"%s","ecosystem_uuid":"%s","is_real_course":true,' ..
      '"starts_at":"2026-09-01T00:00:00.000000Z","ends_at":"2027-01-31T00:00:00.000000Z",' ..
      '"created_at":"2026-08-15T00:00:00.000000Z"}', course, make_uuid(2, index))
    return wrk.format("POST", "/create_course", headers, body)
  end
  local items = {}
  for i = 1, batch do
    response_counter = response_counter + 1
    local n = response_counter
    items[i] = string.format(
      '{"response_uuid":"%s","course_uuid":"%s","sequence_number":%d,"ecosystem_uuid":"%s",' ..
      '"trial_uuid":"%s","student_uuid":"%s","exercise_uuid":"%s","is_correct":%s,' ..
      '"is_real_response":true,"responded_at":"2026-10-01T12:00:00.000000Z"}',
      make_uuid(3, n), course, sequence + i - 1, make_uuid(2, index), make_uuid(4, n),
      make_uuid(5, index * 1000 + n % 100), make_uuid(6, n % 400),
      (n % 3 == 0) and "false" or "true")
  end
  next_sequence[index] = sequence + batch
  return wrk.format("POST", "/record_responses", headers,
    '{"responses":[' .. table.concat(items, ",") .. ']}')
end

function response(status, headers, body)
  if status ~= 200 then
    refused = refused + 1
  elseif string.find(body, "created_course_uuid", 1, true) then
    acked_creates = acked_creates + 1
  else
    -- Every uuid of `recorded_response_uuids`.
    for _ in string.gmatch(body, "%x%x%x%x%x%x%x%x%-%x%x%x%x%-") do
      acked_responses = acked_responses + 1
    end
  end
end

function done(summary, latency, requests)
  local run = threads[1]:get("run")
  local courses_per_thread = threads[1]:get("courses_per_thread")
  local batch = threads[1]:get("batch")
  local acked, creates, refusals = 0, 0, 0
  for _, thread in ipairs(threads) do
    acked = acked + thread:get("acked_responses")
    creates = creates + thread:get("acked_creates")
    refusals = refusals + thread:get("refused")
  end
  local seconds = summary.duration / 1e6
  io.write(string.format(
    '{"bench":"wrk_record_responses","run":%d,"threads":%d,"courses_per_thread":%d,' ..
    '"batch":%d,"seconds":%.2f,"requests":%d,"acked_responses":%d,"acked_creates":%d,' ..
    '"non_200":%d,"socket_errors":%d,"responses_per_s":%.0f,"p50_ms":%.2f,' ..
    '"p99_ms":%.2f,"max_ms":%.2f}\n',
    run, #threads, courses_per_thread, batch, seconds, summary.requests, acked, creates,
    refusals, summary.errors.connect + summary.errors.read + summary.errors.write +
    summary.errors.timeout, acked / seconds, latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000))
end
