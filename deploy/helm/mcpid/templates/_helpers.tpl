{{/* Name of the release's objects: <release>-mcpid unless the release already says mcpid. */}}
{{- define "mcpid.fullname" -}}
{{- if contains "mcpid" .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-mcpid" .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Selector labels of one service. ctx: dict root, name */}}
{{- define "mcpid.selector" -}}
app.kubernetes.io/name: mcpid
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .name }}
{{- end -}}

{{- define "mcpid.labels" -}}
{{ include "mcpid.selector" . }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{/* The gRPC address of service .name inside the cluster. */}}
{{- define "mcpid.grpcAddr" -}}
{{- $svc := index .root.Values.services .name -}}
{{- printf "%s-%s:%d" (include "mcpid.fullname" .root) .name (int $svc.grpcPort) -}}
{{- end -}}

{{/*
Which services each service calls (gRPC). This one table drives the peer
addresses and the NetworkPolicy: a call not listed here is refused by the
network as well as by the callee's allowlist.
*/}}
{{- define "mcpid.calls" -}}
registration: [token, audit]
token: [registration, policy, audit]
policy: [token, audit]
audit: [registration, token]
{{- end -}}

{{- define "mcpid.tlsSecret" -}}
{{- printf "%s-%s-tls" (include "mcpid.fullname" .root) .name -}}
{{- end -}}

{{- define "mcpid.etcdAuthSecret" -}}
{{- default (printf "%s-etcd-auth" (include "mcpid.fullname" .)) .Values.etcd.auth.existingSecret -}}
{{- end -}}

{{- define "mcpid.kekSecret" -}}
{{- if .Values.kek.value -}}{{ printf "%s-kek" (include "mcpid.fullname" .) }}{{- else -}}{{ .Values.kek.existingSecret }}{{- end -}}
{{- end -}}

{{- define "mcpid.checkpointSecret" -}}
{{- if .Values.checkpointKey.value -}}{{ printf "%s-checkpoint-key" (include "mcpid.fullname" .) }}{{- else -}}{{ .Values.checkpointKey.existingSecret }}{{- end -}}
{{- end -}}

{{/* Settings of service .name as flag name -> value. */}}
{{- define "mcpid.settings" -}}
{{- $root := .root -}}
{{- $name := .name -}}
{{- $svc := index $root.Values.services $name -}}
{{- $s := dict -}}
{{- range $k, $v := $root.Values.commonSettings }}{{ $_ := set $s $k (toString $v) }}{{ end -}}
{{- $_ := set $s "grpc-addr" (printf ":%d" (int $svc.grpcPort)) -}}
{{- $_ := set $s "http-addr" (printf ":%d" (int $svc.httpPort)) -}}
{{- $_ := set $s "log-level" $root.Values.logLevel -}}
{{- $_ := set $s "issuer" $root.Values.issuer -}}
{{- $_ := set $s "etcd-endpoints" (join "," $root.Values.etcd.endpoints) -}}
{{- $_ := set $s "tls-cert-file" "/etc/mcpid/tls/tls.crt" -}}
{{- $_ := set $s "tls-key-file" "/etc/mcpid/tls/tls.key" -}}
{{- $_ := set $s "tls-ca-file" "/etc/mcpid/tls/ca.crt" -}}
{{- if $root.Values.etcd.auth.enabled }}
{{- $_ := set $s "etcd-username" (printf "mcpid-%s" $name) -}}
{{- $_ := set $s "etcd-password-file" "/etc/mcpid/etcd-auth/password" -}}
{{- end -}}
{{- if $root.Values.etcd.tls.enabled }}
{{- $_ := set $s "etcd-ca-file" "/etc/mcpid/etcd-tls/ca.crt" -}}
{{- if $root.Values.etcd.tls.clientCertificate }}
{{- $_ := set $s "etcd-cert-file" "/etc/mcpid/etcd-tls/tls.crt" -}}
{{- $_ := set $s "etcd-key-file" "/etc/mcpid/etcd-tls/tls.key" -}}
{{- end -}}
{{- end -}}
{{- if $root.Values.otlp.endpoint }}
{{- $_ := set $s "otlp-endpoint" $root.Values.otlp.endpoint -}}
{{- $_ := set $s "otlp-insecure" (toString $root.Values.otlp.insecure) -}}
{{- end -}}
{{- if ne $name "audit" }}{{ $_ := set $s "audit-addr" (include "mcpid.grpcAddr" (dict "root" $root "name" "audit")) }}{{ end -}}
{{- if eq $name "registration" }}
{{- $_ := set $s "token-addr" (include "mcpid.grpcAddr" (dict "root" $root "name" "token")) -}}
{{- end -}}
{{- if eq $name "token" }}
{{- $_ := set $s "registration-addr" (include "mcpid.grpcAddr" (dict "root" $root "name" "registration")) -}}
{{- $_ := set $s "policy-addr" (include "mcpid.grpcAddr" (dict "root" $root "name" "policy")) -}}
{{- $_ := set $s "kek-file" "/etc/mcpid/kek/kek" -}}
{{- end -}}
{{- if eq $name "policy" }}
{{- $_ := set $s "token-addr" (include "mcpid.grpcAddr" (dict "root" $root "name" "token")) -}}
{{- $_ := set $s "jwks-url" (printf "http://%s-token:%d/oauth2/jwks" (include "mcpid.fullname" $root) (int $root.Values.services.token.httpPort)) -}}
{{- end -}}
{{- if eq $name "audit" }}
{{- $_ := set $s "registration-addr" (include "mcpid.grpcAddr" (dict "root" $root "name" "registration")) -}}
{{- $_ := set $s "token-addr" (include "mcpid.grpcAddr" (dict "root" $root "name" "token")) -}}
{{- $_ := set $s "checkpoint-key-file" "/etc/mcpid/checkpoint/checkpoint.key" -}}
{{- end -}}
{{- range $k, $v := $svc.settings }}{{ $_ := set $s $k (toString $v) }}{{ end -}}
{{- toYaml $s -}}
{{- end -}}
