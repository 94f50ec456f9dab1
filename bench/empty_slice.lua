-- bench: a policy with an on_slice that does nothing, the baseline that
-- policies' per-record costs are measured against (the engine cutting the
-- same slices and handing each batch to Lua).
return { info = { name = "empty_slice" }, on_slice = function() end }
