-- Argo CD health check for simtask.dev/MachineGroup.
-- Install it as resource.customizations.health.simtask.dev_MachineGroup in argocd-cm
-- (docs/gitops.md). Test cases: health_test.yaml and testdata/ beside this file.
--
--   Active      -> Healthy
--   Terminated  -> Suspended: the user terminated it (spec.terminate); nothing is wrong,
--                  it is deliberately out of service
--   Expired     -> Degraded: its spec.timeToLive ran out, so the group the manifest
--                  describes can no longer run tasks
--   no phase    -> Progressing
local hs = {}

-- Argo CD hands numbers over as floats: print them as integers.
local function int(n)
  return string.format("%d", n)
end

local function summary(status)
  local parts = {}
  if status.nodes ~= nil then
    local nodes = int(status.nodes) .. " nodes"
    if status.readyNodes ~= nil then
      nodes = nodes .. " (" .. int(status.readyNodes) .. " ready)"
    end
    table.insert(parts, nodes)
  end
  if status.gpus ~= nil and status.gpus > 0 then
    table.insert(parts, int(status.gpus) .. " GPUs")
  end
  if status.runningTasks ~= nil then
    table.insert(parts, int(status.runningTasks) .. " running")
  end
  if status.queuedTasks ~= nil then
    table.insert(parts, int(status.queuedTasks) .. " queued")
  end
  return table.concat(parts, ", ")
end

local function messageOf(status, phase)
  if status.message ~= nil and status.message ~= "" then
    return status.message
  end
  local text = summary(status)
  if text ~= "" then
    return phase .. ": " .. text
  end
  return phase
end

local status = obj.status
if status == nil or status.phase == nil or status.phase == "" then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to pick up the machine group"
  return hs
end

local generation = obj.metadata.generation
if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. int(generation)
  return hs
end

local phase = status.phase
hs.message = messageOf(status, phase)
if phase == "Active" then
  hs.status = "Healthy"
elseif phase == "Terminated" then
  hs.status = "Suspended"
elseif phase == "Expired" then
  hs.status = "Degraded"
else
  hs.status = "Progressing"
end
return hs
