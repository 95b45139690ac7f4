-- pushsync-push.lua: Dovecot push_notification (Lua driver) script that tells pushsync about
-- every change to a mailbox the moment Dovecot commits it, so phones waiting in Ping are
-- answered without IMAP's batching delay.
--
-- One HTTP POST per committed transaction, with a JSON body
--   {"user":"alice","service":"lmtp","events":[{"event":"MessageNew","mailbox":"INBOX",
--    "uid":7,"uidvalidity":1700000000}, ...]}
-- and the header `Authorization: Bearer <secret>`. pushsync answers at once (204); the
-- request times out quickly so that a stalled endpoint cannot hold up delivery for long.
--
-- Plugin settings (see docs/DOVECOT.md):
--   push_notification_driver = lua:file=/etc/dovecot/pushsync-push.lua
--   pushsync_url = http://127.0.0.1:8445/dovecot
--   pushsync_secret = <the same value as webhook.secret in pushsync's configuration>
--   pushsync_timeout_msecs = 1000   (optional)

local client = nil
local client_timeout = nil

-- Dovecot hands numbers to Lua as floats (7.0): print them as integers.
local function int(n)
  if n == nil then return "0" end
  return string.format("%.0f", n)
end

local escapes = { ['"'] = '\\"', ['\\'] = '\\\\', ['\b'] = '\\b', ['\f'] = '\\f',
                  ['\n'] = '\\n', ['\r'] = '\\r', ['\t'] = '\\t' }

local function str(s)
  s = tostring(s or "")
  s = s:gsub('[%c"\\]', function(c)
    return escapes[c] or string.format("\\u%04x", c:byte())
  end)
  return '"' .. s .. '"'
end

local function list(t)
  local out = {}
  if type(t) == "table" then
    for _, v in ipairs(t) do out[#out + 1] = str(v) end
  end
  return "[" .. table.concat(out, ",") .. "]"
end

local function http_client(timeout)
  if client == nil or client_timeout ~= timeout then
    client = dovecot.http.client({
      timeout = timeout,
      request_timeout_msecs = timeout,
      request_absolute_timeout_msecs = timeout,
      connect_timeout_msecs = timeout,
      max_attempts = 1,
      max_connect_attempts = 1,
      user_agent = "dovecot-pushsync",
    })
    client_timeout = timeout
  end
  return client
end

function dovecot_lua_notify_begin_txn(user)
  local timeout = tonumber(user:plugin_getenv("pushsync_timeout_msecs") or "") or 1000
  return {
    user = user.username,
    service = user.service or "",
    url = user:plugin_getenv("pushsync_url"),
    secret = user:plugin_getenv("pushsync_secret") or "",
    timeout = math.floor(timeout),
    events = {},
  }
end

local function message_event(ctx, event)
  local fields = {
    '"event":' .. str(event.name),
    '"mailbox":' .. str(event.mailbox),
  }
  if event.uid ~= nil then fields[#fields + 1] = '"uid":' .. int(event.uid) end
  if event.uid_validity ~= nil then fields[#fields + 1] = '"uidvalidity":' .. int(event.uid_validity) end
  if event.flags ~= nil then fields[#fields + 1] = '"flags":' .. list(event.flags) end
  if event.keywords ~= nil then fields[#fields + 1] = '"keywords":' .. list(event.keywords) end
  if event.mailbox_old ~= nil then fields[#fields + 1] = '"mailbox_old":' .. str(event.mailbox_old) end
  ctx.events[#ctx.events + 1] = "{" .. table.concat(fields, ",") .. "}"
end

dovecot_lua_notify_event_message_new = message_event
dovecot_lua_notify_event_message_append = message_event
dovecot_lua_notify_event_message_expunge = message_event
dovecot_lua_notify_event_message_read = message_event
dovecot_lua_notify_event_message_trash = message_event
dovecot_lua_notify_event_flags_set = message_event
dovecot_lua_notify_event_flags_clear = message_event
dovecot_lua_notify_event_mailbox_create = message_event
dovecot_lua_notify_event_mailbox_delete = message_event
dovecot_lua_notify_event_mailbox_rename = message_event
dovecot_lua_notify_event_mailbox_subscribe = message_event
dovecot_lua_notify_event_mailbox_unsubscribe = message_event

function dovecot_lua_notify_end_txn(ctx, success)
  if not success or #ctx.events == 0 or ctx.url == nil or ctx.url == "" then
    return
  end
  local body = '{"user":' .. str(ctx.user) .. ',"service":' .. str(ctx.service) ..
               ',"events":[' .. table.concat(ctx.events, ",") .. ']}'
  local ok, err = pcall(function()
    local request = http_client(ctx.timeout):request({ url = ctx.url, method = "POST" })
    request:add_header("Content-Type", "application/json")
    request:add_header("Authorization", "Bearer " .. ctx.secret)
    request:set_payload(body)
    local response = request:submit()
    local status = response:status()
    if status < 200 or status >= 300 then
      dovecot.i_warning("pushsync: webhook answered " .. int(status) .. " for " .. ctx.user)
    end
  end)
  if not ok then
    dovecot.i_warning("pushsync: webhook failed for " .. ctx.user .. ": " .. tostring(err))
  end
end
