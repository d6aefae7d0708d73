{{- define "mlflow.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "mlflow.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "mlflow.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "mlflow.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: t2v-platform
{{- end -}}

{{- define "mlflow.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mlflow.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "mlflow.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "mlflow.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "mlflow.postgresql.fullname" -}}
{{- printf "%s-postgresql" (include "mlflow.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "mlflow.postgresql.secretName" -}}
{{- default (include "mlflow.postgresql.fullname" .) .Values.postgresql.existingSecret -}}
{{- end -}}

{{/* Secret and key holding the backend store URI. */}}
{{- define "mlflow.backendSecretName" -}}
{{- if .Values.backendStore.existingSecret -}}
{{- .Values.backendStore.existingSecret -}}
{{- else if .Values.postgresql.enabled -}}
{{- printf "%s-backend-store" (include "mlflow.fullname" .) -}}
{{- else -}}
{{- fail "set backendStore.existingSecret (a Secret with the PostgreSQL URI) or postgresql.enabled=true" -}}
{{- end -}}
{{- end -}}

{{- define "mlflow.backendSecretKey" -}}
{{- if .Values.backendStore.existingSecret -}}{{ .Values.backendStore.existingSecretKey }}{{- else -}}uri{{- end -}}
{{- end -}}

{{- define "mlflow.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Secret with the auth app's admin password and Flask secret key. */}}
{{- define "mlflow.authSecretName" -}}
{{- default (printf "%s-auth" (include "mlflow.fullname" .)) .Values.auth.existingSecret -}}
{{- end -}}

{{/* Secret with the auth config file (basic_auth.ini). */}}
{{- define "mlflow.authConfigSecretName" -}}
{{- if .Values.auth.configSecret -}}
{{- .Values.auth.configSecret -}}
{{- else if not .Values.backendStore.existingSecret -}}
{{- printf "%s-auth-config" (include "mlflow.fullname" .) -}}
{{- else -}}
{{- fail "auth.enabled with an external database (backendStore.existingSecret) needs auth.configSecret: a Secret with basic_auth.ini (charts/mlflow/files/basic_auth.ini plus database_uri)" -}}
{{- end -}}
{{- end -}}
