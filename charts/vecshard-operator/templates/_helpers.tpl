{{- define "vecshard-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "vecshard-operator.selectorLabels" -}}
app.kubernetes.io/name: vecshard-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "vecshard-operator.labels" -}}
{{ include "vecshard-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "vecshard-operator.serviceAccountName" -}}
{{- default (include "vecshard-operator.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{/* What the operator does to the objects it manages: least privilege, no secrets, no pods. */}}
{{- define "vecshard-operator.rules" -}}
- apiGroups: ["vecshard.io"]
  resources: ["vectorcollections"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["vecshard.io"]
  resources: ["shardsets"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
# VectorSnapshots: taken (status), created by schedules, deleted by retention.
- apiGroups: ["vecshard.io"]
  resources: ["vectorsnapshots"]
  verbs: ["get", "list", "watch", "create", "delete"]
- apiGroups: ["vecshard.io"]
  resources: ["vectorcollections/status", "shardsets/status", "vectorsnapshots/status"]
  verbs: ["get", "update", "patch"]
# Secrets: the snapshot bucket's credentials (and CA) named in spec.snapshots.s3 and
# spec.restoreFrom.s3, read to reach the bucket and never copied into other objects; the
# collection's TLS and API-key Secrets, read to call its shards as its components do; and the
# CA and certificate Secrets the operator issues and renews (spec.tls).
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "create", "patch"]
# The NetworkPolicies around a collection's pods (spec.networkPolicy).
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
# Which shard pods are ready (caught up): the shard map counts only those as serving.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["apps"]
  resources: ["statefulsets", "deployments"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
- apiGroups: [""]
  resources: ["services", "configmaps", "serviceaccounts"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
# The routers' Role lets them read their shard-map ConfigMap.
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles", "rolebindings"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}
