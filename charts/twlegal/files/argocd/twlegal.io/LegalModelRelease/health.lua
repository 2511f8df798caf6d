-- Argo CD health check for twlegal.io/LegalModelRelease.
-- Add to argocd-cm as resource.customizations.health.twlegal.io_LegalModelRelease.
--   Progressing: the operator has not observed the current spec yet, or the release is training,
--                evaluating or rolling out
--   Healthy:     Serving (Ready), Completed (trained, serving disabled), Superseded (a newer
--                release of the target serves)
--   Degraded:    Failed, Rejected, RolledBack, and a release that cannot start until its spec
--                changes (Ready reason StorageConflict or StorageUnset)
local hs = {}

local function ready_condition(status)
  if status.conditions ~= nil then
    for _, condition in ipairs(status.conditions) do
      if condition.type == "Ready" then
        return condition
      end
    end
  end
  return nil
end

local function ready_message(status)
  local condition = ready_condition(status)
  if condition ~= nil and condition.message ~= nil and condition.message ~= "" then
    return condition.message
  end
  return nil
end

local NEEDS_SPEC_CHANGE = {StorageConflict = true, StorageUnset = true}

if obj.status == nil or obj.status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the twlegal operator"
  return hs
end

local status = obj.status
if obj.metadata.generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < obj.metadata.generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(obj.metadata.generation)
  return hs
end

local phase = status.phase
local message = ready_message(status) or phase
if phase == "Serving" or phase == "Completed" then
  hs.status = "Healthy"
elseif phase == "Superseded" then
  hs.status = "Healthy"
  if status.serving ~= nil and status.serving.supersededBy ~= nil then
    message = "Superseded by " .. status.serving.supersededBy
  end
elseif phase == "Failed" or phase == "Rejected" or phase == "RolledBack"
    or (ready_condition(status) ~= nil and NEEDS_SPEC_CHANGE[ready_condition(status).reason]) then
  hs.status = "Degraded"
  message = phase .. ": " .. message
else
  hs.status = "Progressing"
  message = phase .. ": " .. message
end
hs.message = message
return hs
