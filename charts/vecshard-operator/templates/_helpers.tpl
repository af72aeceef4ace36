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
# The snapshot bucket's credentials (and CA) Secrets named in spec.snapshots.s3 and
# spec.restoreFrom.s3: read to reach the bucket, never copied into other objects.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
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
