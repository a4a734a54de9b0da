{{/* Name of the chart, overridable. */}}
{{- define "simtask-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's objects, at most 63 characters. */}}
{{- define "simtask-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* chart label value: name-version. */}}
{{- define "simtask-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select the operator pod; never change them between versions. */}}
{{- define "simtask-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "simtask-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels on every object of the chart. */}}
{{- define "simtask-operator.labels" -}}
helm.sh/chart: {{ include "simtask-operator.chart" . }}
{{ include "simtask-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: simtask-operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Name of the operator's ServiceAccount. */}}
{{- define "simtask-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "simtask-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Image reference: repository@digest, or repository:tag (tag defaults to appVersion). */}}
{{- define "simtask-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
The RBAC rules of the operator: exactly the tables of "RBAC the operator needs" in
docs/design.md (tests/unit/test_helm_chart.py compares them), no wildcards.
"clusterRules" are cluster-scoped kinds, granted by a ClusterRole in every mode.
"namespacedRules" are granted by a Role in each namespace of `watchNamespaces`, or by the
ClusterRole when the operator serves the whole cluster. Secrets (`get`, to check that a
Secret input exists) only in the served namespaces, or cluster-wide by explicit opt-in
(`rbac.readSecretsClusterWide`).
*/}}
{{- define "simtask-operator.clusterRules" -}}
- apiGroups: ["simtask.dev"]
  resources: ["machinegroups"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["simtask.dev"]
  resources: ["machinegroups/status"]
  verbs: ["get", "patch", "update"]
- apiGroups: [""]
  resources: ["nodes"]
  verbs: ["get", "list", "watch"]
{{- end }}

{{- define "simtask-operator.namespacedRules" -}}
- apiGroups: ["simtask.dev"]
  resources: ["simulationtasks"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["simtask.dev"]
  resources: ["simulationtasks/status"]
  verbs: ["get", "patch", "update"]
- apiGroups: ["simtask.dev"]
  resources: ["simulationbatches"]
  verbs: ["get", "list", "watch", "patch", "delete"]
- apiGroups: ["simtask.dev"]
  resources: ["simulationbatches/status"]
  verbs: ["get", "patch", "update"]
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
- apiGroups: [""]
  resources: ["configmaps", "persistentvolumeclaims"]
  verbs: ["get"]
{{- if .secrets }}
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
{{- end }}
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch", "list", "watch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
# Kept logs (SPEC §7): an attempt's log read once when it ends, kept in a ConfigMap
# `<job>-log` created once (an existing one is left alone: no get, update or delete).
- apiGroups: [""]
  resources: ["pods/log"]
  verbs: ["get"]
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["create"]
{{- end }}

{{/* Whether the operator looks Secret inputs up itself (it may read Secrets there). */}}
{{- define "simtask-operator.checksSecrets" -}}
{{- if or .Values.watchNamespaces .Values.rbac.readSecretsClusterWide }}true{{ end }}
{{- end }}

{{/* Namespace of an optional monitoring object: its own value or the release's. */}}
{{- define "simtask-operator.namespaceOr" -}}
{{- default .root.Release.Namespace .namespace }}
{{- end }}
