-- Managed by Ansible (role mxedge.matrix.haproxy); local changes are overwritten.
--
-- Two helpers for haproxy.cfg.
--
-- Converter "mx_normalize_path" (used as `path,lua.mx_normalize_path`): the
-- request path as a server resolves it, for ACL matching only. The request
-- itself goes upstream unchanged; this value only decides routing and the
-- admin-path 403, so that encoded (/_synapse/%61dmin, /_synapse%2Fadmin) and
-- dot-segment (/_matrix/../_synapse/admin) variants are caught.
--
--   1. every %XX is decoded once (the homeserver decodes once too),
--   2. runs of slashes are merged,
--   3. "." and ".." segments are removed (RFC 3986, 5.2.4; ".." never climbs
--      above the root).

local function hex_to_char(hex)
  return string.char(tonumber(hex, 16))
end

local function normalize_path(path)
  if type(path) ~= "string" or path == "" then
    return "/"
  end
  local decoded = path:gsub("%%(%x%x)", hex_to_char)
  decoded = decoded:gsub("/+", "/")

  local segments = {}
  local directory = decoded:sub(-1) == "/"
  for segment in decoded:gmatch("[^/]+") do
    if segment == "." then
      directory = true
    elseif segment == ".." then
      table.remove(segments)
      directory = true
    else
      segments[#segments + 1] = segment
      directory = false
    end
  end
  if decoded:sub(-1) == "/" then
    directory = true
  end

  local result = "/" .. table.concat(segments, "/")
  if directory and #segments > 0 then
    result = result .. "/"
  end
  return result
end

core.register_converters("mx_normalize_path", normalize_path)

-- Service "mx_too_large" (`http-request use-service lua.mx_too_large`): the
-- 413 answer to a request whose Content-Length exceeds the body limit, sent
-- after reading and discarding the body. Answering before the body is read
-- and closing (what `http-request return` does) resets the connection under
-- clients that send the whole body before reading (most HTTP libraries when
-- they do not use "Expect: 100-continue"), so they never see the 413; on
-- HTTP/2 the stream is cancelled. Like nginx's lingering close, reading stops
-- after DRAIN_SECONDS; then the connection is closed.
local DRAIN_SECONDS = 30
local TOO_LARGE_BODY = '{"errcode":"M_TOO_LARGE","error":"Request body too large"}'

local function too_large(applet)
  local started = core.now().sec
  while true do
    local chunk = applet:receive(65536)
    if chunk == nil or #chunk == 0 or core.now().sec - started >= DRAIN_SECONDS then
      break
    end
  end
  applet:set_status(413)
  applet:add_header("content-type", "application/json")
  applet:add_header("content-length", tostring(#TOO_LARGE_BODY))
  applet:start_response()
  applet:send(TOO_LARGE_BODY)
end

core.register_service("mx_too_large", "http", too_large)
