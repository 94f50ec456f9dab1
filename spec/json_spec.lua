-- sluice.json: the Lua-side encoder for records built in Lua.
local json = require "sluice.json"
local cjson = require "cjson"
local ffi = require "ffi"

local encode = json.encode

describe("sluice.json.encode", function()
  describe("strings", function()
    it("quotes plain strings", function()
      assert.equal('"hello"', encode("hello"))
      assert.equal('""', encode(""))
    end)

    it("escapes quotes and backslashes", function()
      assert.equal([["say \"hi\""]], encode('say "hi"'))
      assert.equal([["C:\\temp\\x"]], encode([[C:\temp\x]]))
      assert.equal([["\\\""]], encode([[\"]]))
    end)

    it("escapes control characters", function()
      assert.equal([["a\nb"]], encode("a\nb"))
      assert.equal([["a\rb\tc"]], encode("a\rb\tc"))
      assert.equal([["\u0000"]], encode("\0"))
      assert.equal([["\u0001\u001f"]], encode("\1\31"))
      assert.equal([["\u0008\u000c"]], encode("\b\f"))
    end)

    it("writes valid UTF-8 only: a byte outside a valid sequence becomes U+FFFD", function()
      local R = "\239\191\189"
      assert.equal('"x' .. R .. 'y"', encode("x\255y"))
      assert.equal('"\195\169\240\159\152\128"', encode("\195\169\240\159\152\128"), "é and an emoji kept")
      -- overlong, surrogate, truncated, above U+10FFFF
      assert.equal('"' .. R .. R .. '"', encode("\192\128"))
      assert.equal('"' .. R .. R .. R .. '"', encode("\237\160\128"))
      assert.equal('"a' .. R .. '"', encode("a\226\130"):gsub(R .. R, R))
      assert.equal('"' .. R .. R .. R .. R .. '"', encode("\244\144\128\128"))
      -- cjson reads every line back
      for i = 128, 255 do
        assert.equal("table", type(cjson.decode(encode({ s = "a" .. string.char(i) .. "b" }))))
      end
    end)

    it("round-trips every byte below 0x80 through cjson", function()
      local t = {}
      for i = 0, 127 do t[#t + 1] = string.char(i) end
      local s = table.concat(t)
      local out = encode(s)
      assert.is_nil(out:find("[%z\1-\31]"), "raw control character in output")
      assert.equal(s, cjson.decode(out))
    end)

    it("passes UTF-8 through unchanged", function()
      local s = "caf\195\169 \226\130\172"
      assert.equal('"' .. s .. '"', encode(s))
      assert.equal(s, cjson.decode(encode(s)))
    end)

    it("escapes keys as well", function()
      local out = encode { ['a"b'] = 1, ["c\nd"] = 2 }
      assert.equal([[{"a\"b":1,"c\nd":2}]], out)
      assert.same({ ['a"b'] = 1, ["c\nd"] = 2 }, cjson.decode(out))
    end)
  end)

  describe("numbers", function()
    it("writes integers without a fraction", function()
      assert.equal("0", encode(0))
      assert.equal("42", encode(42))
      assert.equal("-7", encode(-7))
      assert.equal("1700000000", encode(1700000000))
      assert.equal("9007199254740991", encode(2 ^ 53 - 1))
      assert.equal("12345678901234", encode(12345678901234))
    end)

    it("writes floats with their fraction", function()
      assert.equal("0.5", encode(0.5))
      assert.equal("-2.25", encode(-2.25))
      assert.equal(0.1, tonumber(encode(0.1)))
      assert.is_true(math.abs(tonumber(encode(1 / 3)) - 1 / 3) < 1e-15)
    end)

    it("keeps epoch seconds with microseconds through a cjson round trip", function()
      for _, t in ipairs { 1700000000.123456, 1700000000.000001, 1699999999.999999, 2000000000.5 } do
        local out = encode { first = t }
        local back = cjson.decode(out).first
        assert.is_true(math.abs(back - t) < 1e-6, string.format("%.6f -> %s", t, out))
      end
    end)

    it("writes NaN and infinities as null", function()
      assert.equal("null", encode(0 / 0))
      assert.equal("null", encode(math.huge))
      assert.equal("null", encode(-math.huge))
      assert.equal('{"x":null}', encode { x = 0 / 0 })
      assert.equal("[1,null,2]", encode { 1, 0 / 0, 2 })
    end)

    it("writes 64-bit cdata numbers as numbers", function()
      assert.equal("123", encode(ffi.new("uint64_t", 123)))
      assert.equal("5", encode(ffi.new("int32_t", 5)))
    end)
  end)

  describe("other values", function()
    it("writes booleans and nil", function()
      assert.equal("true", encode(true))
      assert.equal("false", encode(false))
      assert.equal("null", encode(nil))
    end)

    it("refuses functions", function()
      assert.has_error(function() encode { f = function() end } end)
    end)

    it("refuses cycles instead of recursing forever", function()
      local t = {}
      t.self = t
      assert.has_error(function() encode(t) end)
    end)
  end)

  describe("tables", function()
    it("writes sequences as arrays", function()
      assert.equal("[1,2,3]", encode { 1, 2, 3 })
      assert.equal('["a",true,false]', encode { "a", true, false })
    end)

    it("writes objects with sorted keys", function()
      assert.equal('{"a":1,"b":2,"c":3}', encode { c = 3, a = 1, b = 2 })
      local big = {}
      for i = 1, 40 do big["k" .. string.format("%02d", 41 - i)] = i end
      local out = encode(big)
      local keys = {}
      for k in out:gmatch('"(k%d%d)"') do keys[#keys + 1] = k end
      assert.equal(40, #keys)
      for i = 2, #keys do assert.is_true(keys[i - 1] < keys[i]) end
      -- stable: the same table gives the same text
      assert.equal(out, encode(big))
    end)

    it("nests arrays and objects", function()
      local v = { name = "x", list = { 1, { 2, 3 }, { k = "v" } }, obj = { inner = { deep = { 1 } } } }
      local out = encode(v)
      assert.equal('{"list":[1,[2,3],{"k":"v"}],"name":"x","obj":{"inner":{"deep":[1]}}}', out)
      assert.same(v, cjson.decode(out))
    end)

    it("writes a table with numeric and string keys as an object", function()
      local out = encode { 10, 20, n = 2 }
      assert.same({ ["1"] = 10, ["2"] = 20, n = 2 }, cjson.decode(out))
    end)

    it("encodes a flow-like record that cjson reads back", function()
      local rec = { type = "flow", id = 12, src = "2001:db8::1", sport = 443, first = 1700000000.25,
        last = 1700000001.75, history = "ShADdFf", tags = { "a", "b" }, vlan_inner = nil }
      local back = cjson.decode(encode(rec))
      assert.same({ type = "flow", id = 12, src = "2001:db8::1", sport = 443, first = 1700000000.25,
        last = 1700000001.75, history = "ShADdFf", tags = { "a", "b" } }, back)
    end)
  end)

  describe("what JSON cannot hold", function()
    it("refuses functions, cycles and keys that are not strings or numbers, without a position", function()
      local ok, err = pcall(encode, { f = print })
      assert.is_false(ok)
      assert.equal("cannot encode a function as JSON", err)
      local t = {}
      t.self = t
      ok, err = pcall(encode, t)
      assert.is_false(ok)
      assert.equal("JSON nesting too deep (a cycle?)", err)
      ok, err = pcall(encode, { [true] = 1 })
      assert.is_false(ok)
      assert.equal("cannot encode a table with a boolean key as JSON", err)
    end)

    -- a flow handle in a record: tonumber gave nil and floor raised
    -- inside json.lua, without the policy's line
    it("refuses a cdata that is not a number, naming handles; numbers in cdata are numbers", function()
      local handle = ffi.new("struct { int x; }")
      local ok, err = pcall(encode, { f = handle })
      assert.is_false(ok)
      assert.equal("cannot encode a cdata that is not a number as JSON", err)
      assert.equal("cannot encode a cdata that is not a number as JSON (a flow or packet handle: " ..
        "its :totable()) (at record.f)", json.check({ f = handle }))
      assert.is_nil(json.check({ n = ffi.new("uint64_t", 5) }))
      assert.equal('{"n":5}', encode({ n = ffi.new("uint64_t", 5) }))
    end)

    it("writes number keys as their text", function()
      assert.equal('{"1.5":2,"a":1}', encode({ a = 1, [1.5] = 2 }))
    end)
  end)
end)
