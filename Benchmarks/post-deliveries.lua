-- wrk script: POST distinct, correctly signed 1 KB GitHub deliveries to /webhooks/github.
-- Each request gets a body no other request has (thread number and counter inside it) and its
-- X-Hub-Signature-256, computed here with OpenSSL's HMAC through LuaJIT's FFI (a couple of microseconds),
-- so a run of any length sends only new deliveries and wrk starts at once (no pool file to load).
-- Environment: SECRET (the shared secret), TARGET_PATH (default /webhooks/github).
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

function init(args)
   secret = assert(os.getenv("SECRET"), "SECRET is not set")
   path = os.getenv("TARGET_PATH") or "/webhooks/github"
   counter = 0
   digest = ffi.new("unsigned char[32]")
   digest_length = ffi.new("unsigned int[1]")
   sha256 = crypto.EVP_sha256()
   -- A run-unique prefix keeps deliveries of separate runs against one store distinct too.
   run = string.format("%x%04x", os.time(), math.random(0, 0xffff))
   padding = string.rep("x", 1024)
end

local hex_digits = {}
for byte = 0, 255 do hex_digits[byte] = string.format("%02x", byte) end

local function hex(bytes, length)
   local out = {}
   for index = 0, length - 1 do out[index + 1] = hex_digits[bytes[index]] end
   return table.concat(out)
end

function request()
   counter = counter + 1
   local delivery = string.format("%s-%d-%d", run, id, counter)
   local head = string.format('{"ref":"refs/heads/main","delivery":"%s","padding":"', delivery)
   local body = head .. padding:sub(1, 1024 - #head - 2) .. '"}'
   crypto.HMAC(sha256, secret, #secret, body, #body, digest, digest_length)
   return wrk.format("POST", path, {
      ["Content-Type"] = "application/json",
      ["X-GitHub-Event"] = "push",
      ["X-GitHub-Delivery"] = delivery,
      ["X-Hub-Signature-256"] = "sha256=" .. hex(digest, 32),
   }, body)
end
