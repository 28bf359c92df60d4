-- wrk script for bench/embed_speed.py: POSTs single ~20-token sentences to /api/embed (MODEL env).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local words = {"local", "models", "keep", "private", "data", "on", "the", "machine", "that", "runs", "them", "while", "answering", "search", "ranking", "retrieval", "documents"}
local bodies = {}
for i = 1, 64 do
  local s = {}
  for j = 1, 17 do s[j] = words[((i * 7 + j * 3) % #words) + 1] end
  bodies[i] = '{"model": "' .. (os.getenv("MODEL") or "all-minilm") .. '", "input": "' .. table.concat(s, " ") .. '."}'
end
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, nil, nil, bodies[(n % 64) + 1])
end
