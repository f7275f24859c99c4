{{/* Names are truncated to 63 characters (DNS-1123 label limit), as in the jobset and external-dns charts. */}}

{{- define "kresume.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "kresume.fullname" -}}
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

{{- define "kresume.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: stable across upgrades (never add version labels here). */}}
{{- define "kresume.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kresume.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "kresume.labels" -}}
helm.sh/chart: {{ include "kresume.chart" . }}
{{ include "kresume.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kresume
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "kresume.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kresume.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "kresume.webhookServiceName" -}}
{{- printf "%s-webhook" (include "kresume.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "kresume.tlsSecretName" -}}
{{- default (printf "%s-webhook-tls" (include "kresume.fullname" .) | trunc 63 | trimSuffix "-") .Values.webhook.tlsSecretName }}
{{- end }}

{{- define "kresume.issuerName" -}}
{{- printf "%s-selfsigned" (include "kresume.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "kresume.certificateName" -}}
{{- printf "%s-webhook" (include "kresume.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "kresume.peeringName" -}}
{{- default (include "kresume.fullname" .) .Values.operator.peeringName }}
{{- end }}

{{/* Kopf peering is on when more than one replica runs. */}}
{{- define "kresume.peering" -}}
{{- if gt (int .Values.operator.replicas) 1 }}true{{- end }}
{{- end }}

{{- define "kresume.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The webhook Service's in-cluster DNS names (the serving certificate's SANs). */}}
{{- define "kresume.webhookDNSNames" -}}
{{- $svc := include "kresume.webhookServiceName" . -}}
{{- $ns := .Release.Namespace -}}
{{- $names := list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) -}}
{{- $host := include "kresume.webhookURLHost" . -}}
{{- if and $host (not (regexMatch "^[0-9.]+$" $host)) }}{{- $names = append $names $host -}}{{- end }}
{{- $names | toJson }}
{{- end }}

{{/* IP addresses the chart-generated serving certificate names: webhook.url's host when it is an IPv4 address. */}}
{{- define "kresume.webhookIPs" -}}
{{- $host := include "kresume.webhookURLHost" . -}}
{{- if regexMatch "^[0-9.]+$" $host }}{{- list $host | toJson }}{{- else }}[]{{- end }}
{{- end }}

{{/* The host part of webhook.url ("" when unset). */}}
{{- define "kresume.webhookURLHost" -}}
{{- if .Values.webhook.url }}{{- (split ":" (urlParse .Values.webhook.url).host)._0 }}{{- end }}
{{- end }}

{{/* Where the webhook is reached: webhook.url, else the Service's in-cluster name. */}}
{{- define "kresume.webhookURL" -}}
{{- if .Values.webhook.url }}{{- .Values.webhook.url }}{{- else }}{{- printf "https://%s.%s.svc:%v/inject-pod" (include "kresume.webhookServiceName" .) .Release.Namespace .Values.webhook.servicePort }}{{- end }}
{{- end }}

{{/* PodDisruptionBudget API: policy/v1 where served (1.21+), else policy/v1beta1. */}}
{{- define "kresume.pdbApiVersion" -}}
{{- if .Capabilities.APIVersions.Has "policy/v1" }}policy/v1{{- else }}policy/v1beta1{{- end }}
{{- end }}
