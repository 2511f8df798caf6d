{{/* The claim of releases that name none: storage.defaultClaim, or the PVC the chart creates. */}}
{{- define "twlegal.defaultClaim" -}}
{{- .Values.storage.defaultClaim | default (ternary .Values.storage.claimName "" .Values.storage.create) -}}
{{- end }}

{{- define "twlegal.fullname" -}}
{{- printf "%s-operator" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "twlegal.serviceAccountName" -}}
{{- default (include "twlegal.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "twlegal.labels" -}}
app.kubernetes.io/name: twlegal
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: twlegal
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "twlegal.selectorLabels" -}}
app.kubernetes.io/name: twlegal
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}
