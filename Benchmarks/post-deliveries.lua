-- wrk script: POST distinct, correctly signed 1 KB GitHub deliveries to /webhooks/github.
-- Each request carries a delivery no other request has: its number (thread, counter) is written into a
-- fixed-width slot of both the X-GitHub-Delivery header and the body, and the body is signed for it with
-- OpenSSL's HMAC through LuaJIT's FFI. The request is built in one C buffer and only its id digits and
-- signature change, so the client spends about as little per request as one reading a prepared pool,
-- while a run of any length sends only new deliveries and wrk starts at once.
-- Environment: SECRET (the shared secret), TARGET_PATH (default /webhooks/github), RUN_SALT (a number that
-- keeps the deliveries of wrk processes started in the same second apart; default 0).
local ffi = require("ffi")
ffi.cdef[[
typedef struct evp_md_st EVP_MD;
const EVP_MD *EVP_sha256(void);
unsigned char *HMAC(const EVP_MD *evp_md, const void *key, int key_len, const unsigned char *data, size_t data_len,
                    unsigned char *md, unsigned int *md_len);
]]
local crypto = ffi.load("crypto")

local next_id = 0

function setup(thread)
   thread:set("id", next_id)
   next_id = next_id + 1
end

local id_width = 24          -- "<run>-<thread>-<counter>", zero-padded
local signature_width = 64   -- hex SHA-256

function init(args)
   secret = assert(os.getenv("SECRET"), "SECRET is not set")
   local path = os.getenv("TARGET_PATH") or "/webhooks/github"
   counter = 0
   -- A run-unique prefix keeps deliveries of separate runs against one store distinct too.
   local salt = tonumber(os.getenv("RUN_SALT") or "0") or 0
   run = string.format("%08x", (os.time() * 16 + id + salt * 1000003) % 0xffffffff)
   local placeholder_id = string.rep("0", id_width)
   local head = '{"ref":"refs/heads/main","delivery":"' .. placeholder_id .. '","padding":"'
   local body = head .. string.rep("x", 1024 - #head - 2) .. '"}'
   local request = "POST " .. path .. " HTTP/1.1\r\n"
      .. "Host: " .. wrk.host .. ":" .. wrk.port .. "\r\n"
      .. "Content-Type: application/json\r\n"
      .. "X-GitHub-Event: push\r\n"
      .. "X-GitHub-Delivery: " .. placeholder_id .. "\r\n"
      .. "X-Hub-Signature-256: sha256=" .. string.rep("0", signature_width) .. "\r\n"
      .. "Content-Length: " .. #body .. "\r\n\r\n" .. body
   length = #request
   buffer = ffi.new("unsigned char[?]", length)
   ffi.copy(buffer, request, length)
   -- Offsets (0-based) of the slots that change per request.
   header_id_at = request:find("X-GitHub-Delivery: ", 1, true) - 1 + #"X-GitHub-Delivery: "
   signature_at = request:find("sha256=", 1, true) - 1 + #"sha256="
   body_at = length - #body
   body_id_at = body_at + #'{"ref":"refs/heads/main","delivery":"'
   body_length = #body
   digest = ffi.new("unsigned char[32]")
   digest_length = ffi.new("unsigned int[1]")
   sha256 = crypto.EVP_sha256()
   -- The id is "<run>-<thread>-<counter>": the first two parts are written once, the counter per request.
   local prefix = string.format("%s-%d-", run, id)
   counter_from = #prefix
   ffi.copy(buffer + header_id_at, prefix, #prefix)
   ffi.copy(buffer + body_id_at, prefix, #prefix)
   hex = ffi.new("unsigned char[16]", {48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 97, 98, 99, 100, 101, 102})
end

function request()
   counter = counter + 1
   -- The counter's digits, right-aligned in the id slot of the header and of the body.
   local value = counter
   for position = id_width - 1, counter_from, -1 do
      local digit = 48 + value % 10
      buffer[header_id_at + position] = digit
      buffer[body_id_at + position] = digit
      value = math.floor(value / 10)
   end
   crypto.HMAC(sha256, secret, #secret, buffer + body_at, body_length, digest, digest_length)
   for index = 0, 31 do
      local byte = digest[index]
      buffer[signature_at + 2 * index] = hex[bit.rshift(byte, 4)]
      buffer[signature_at + 2 * index + 1] = hex[bit.band(byte, 15)]
   end
   return ffi.string(buffer, length)
end
