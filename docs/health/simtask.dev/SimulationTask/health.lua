-- Argo CD health check for simtask.dev/SimulationTask.
-- Install it as resource.customizations.health.simtask.dev_SimulationTask in argocd-cm
-- (docs/gitops.md). Test cases: health_test.yaml and testdata/ beside this file.
--
--   Success                                  -> Healthy
--   Failed, Killed, Zombie, TTLExceeded,
--   ExecutorTerminatedByUser,
--   ExecutorTerminatedTTLExceeded,
--   ExecutorFailed                           -> Degraded
--   SpotPreempted, ExecutorTerminated        -> Degraded when final (condition Failed is
--                                               True), else Progressing (a resubmission
--                                               follows)
--   Held                                     -> Suspended
--   anything else                            -> Progressing
local hs = {}

-- Argo CD hands numbers over as floats: print them as integers.
local function int(n)
  return string.format("%d", n)
end

local degraded = {
  Failed = true,
  Killed = true,
  Zombie = true,
  ExecutorTerminatedByUser = true,
  ExecutorTerminatedTTLExceeded = true,
  ExecutorFailed = true,
  TTLExceeded = true,
}

local preempted = {
  SpotPreempted = true,
  ExecutorTerminated = true,
}

local function conditionIsTrue(status, conditionType)
  if status.conditions == nil then
    return false
  end
  for _, condition in ipairs(status.conditions) do
    if condition.type == conditionType then
      return condition.status == "True"
    end
  end
  return false
end

local function messageOf(status, phase)
  if status.message ~= nil and status.message ~= "" then
    return status.message
  end
  if status.reason ~= nil and status.reason ~= "" and status.reason ~= phase then
    return phase .. ": " .. status.reason
  end
  return phase
end

local status = obj.status
if status == nil or status.phase == nil or status.phase == "" then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to pick up the task"
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
if phase == "Success" then
  hs.status = "Healthy"
elseif degraded[phase] then
  hs.status = "Degraded"
elseif preempted[phase] then
  if conditionIsTrue(status, "Failed") then
    hs.status = "Degraded"
  else
    hs.status = "Progressing"
  end
elseif phase == "Held" then
  hs.status = "Suspended"
else
  hs.status = "Progressing"
end
return hs
