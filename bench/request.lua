-- wrk script for the Conduit benchmark.
-- Arguments (after "--"): method, token ("-" for none), body ("-" for none), then one or more paths,
-- used in turn. Method "TOGGLE" alternates POST and DELETE on the same path (favorite + unfavorite).
local method, token, body, paths
local counter = 0

function init(args)
  method, token, body = args[1], args[2], args[3]
  paths = {}
  for i = 4, #args do paths[#paths + 1] = args[i] end
end

function request()
  counter = counter + 1
  local headers = { ["Content-Type"] = "application/json" }
  if token ~= "-" then headers["Authorization"] = "Token " .. token end
  local payload = nil
  if body ~= "-" then payload = body end
  local verb = method
  local path
  if method == "TOGGLE" then
    path = paths[(math.floor((counter - 1) / 2) % #paths) + 1]
    if counter % 2 == 1 then verb = "POST" else verb = "DELETE" end
  else
    path = paths[((counter - 1) % #paths) + 1]
  end
  return wrk.format(verb, path, headers, payload)
end
