-- wrk script: POST distinct, correctly signed 1 KB GitHub deliveries to /webhooks/github.
-- The pool file (POOL env var) holds one delivery per line: <delivery id> TAB <X-Hub-Signature-256> TAB <body>.
-- Each wrk thread takes every Nth line; when its share runs out it starts over (then the answers are
-- duplicates, which still exercises verification and the nonce table).
local threads = {}
local next_id = 0

function setup(thread)
   thread:set("id", next_id)
   next_id = next_id + 1
   table.insert(threads, thread)
end

function init(args)
   local share = tonumber(os.getenv("THREADS") or "2")
   mine = {}
   local index = 0
   for line in io.lines(os.getenv("POOL")) do
      if index % share == id then
         local delivery, signature, body = line:match("^([^\t]+)\t([^\t]+)\t(.*)$")
         mine[#mine + 1] = { delivery, signature, body }
      end
      index = index + 1
   end
   position = 0
   path = os.getenv("TARGET_PATH") or "/webhooks/github"
end

function request()
   position = position + 1
   if position > #mine then position = 1 end
   local entry = mine[position]
   return wrk.format("POST", path, {
      ["Content-Type"] = "application/json",
      ["X-GitHub-Event"] = "push",
      ["X-GitHub-Delivery"] = entry[1],
      ["X-Hub-Signature-256"] = entry[2],
   }, entry[3])
end
