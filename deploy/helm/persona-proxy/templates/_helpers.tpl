{{- define "persona-proxy.fullname" -}}
{{ .Release.Name }}-persona-proxy
{{- end }}

{{- define "persona-proxy.labels" -}}
app.kubernetes.io/name: persona-proxy
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}

{{- define "persona-proxy.selectorLabels" -}}
app.kubernetes.io/name: persona-proxy
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}
