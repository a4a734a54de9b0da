-- Argo CD health check for simtask.dev/SimulationBatch.
-- Install it as resource.customizations.health.simtask.dev_SimulationBatch in argocd-cm
-- (docs/gitops.md). Test cases: health_test.yaml and testdata/ beside this file.
--
--   Success                -> Healthy
--   Failed, Killed         -> Degraded
--   Held                   -> Suspended
--   Submitted, Running     -> Progressing
local hs = {}

-- Argo CD hands numbers over as floats: print them as integers.
local function int(n)
  return string.format("%d", n)
end

local status = obj.status
if status == nil or status.phase == nil or status.phase == "" then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to pick up the batch"
  return hs
end

local generation = obj.metadata.generation
if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. int(generation)
  return hs
end

local phase = status.phase
if status.message ~= nil and status.message ~= "" then
  hs.message = status.message
else
  hs.message = phase
end
if phase == "Success" then
  hs.status = "Healthy"
elseif phase == "Failed" or phase == "Killed" then
  hs.status = "Degraded"
elseif phase == "Held" then
  hs.status = "Suspended"
else
  hs.status = "Progressing"
end
return hs
