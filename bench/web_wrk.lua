-- wrk script for bench/web_latency.py: optional random IDs in the path, percentiles as one JSON line.
-- WRK_PATH: "{id}" becomes a random ID in 1..WRK_MAX_ID, "{page}" a random page in 1..WRK_MAX_PAGE.
local path_template = os.getenv("WRK_PATH") or "/"
local max_id = tonumber(os.getenv("WRK_MAX_ID") or "1")
local max_page = tonumber(os.getenv("WRK_MAX_PAGE") or "1")

request = function()
  local path = path_template:gsub("{id}", tostring(math.random(1, max_id)))
  path = path:gsub("{page}", tostring(math.random(1, max_page)))
  return wrk.format("GET", path)
end

done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
                 + summary.errors.status + summary.errors.timeout
  io.write(string.format(
    '{"requests": %d, "seconds": %.2f, "errors": %d, "p50_ms": %.1f, "p95_ms": %.1f, "p99_ms": %.1f, ' ..
    '"max_ms": %.1f, "bytes_per_request": %.0f}\n',
    summary.requests, summary.duration / 1e6, errors, latency:percentile(50) / 1000,
    latency:percentile(95) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
    summary.bytes / math.max(1, summary.requests)))
end
