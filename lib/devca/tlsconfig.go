package devca

import (
	"crypto/tls"
	"crypto/x509"
)

// ServerTLSConfig returns a TLS 1.3 server configuration that presents cert
// and verifies a client certificate against roots when the client sends one.
//
// Client certificates are optional at the TLS layer because mcpid services
// accept two kinds of caller on one port: mTLS peers (services, operators'
// bootstrap certificates, MCP servers) and bearer-token callers (operators
// after `mcpid login`, MCP servers with a client_credentials token). A
// certificate that is sent but does not verify still fails the handshake;
// lib/principal's interceptor decides per method whether an identity is
// required.
func ServerTLSConfig(roots *x509.CertPool, cert tls.Certificate) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientCAs:    roots,
		ClientAuth:   tls.VerifyClientCertIfGiven,
	}
}

// ClientTLSConfig returns a TLS 1.3 client configuration that verifies the
// server against roots and, if cert is not nil, presents it. serverName may
// be empty when the caller (e.g. gRPC) fills it in from the target address.
func ClientTLSConfig(roots *x509.CertPool, cert *tls.Certificate, serverName string) *tls.Config {
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS13,
		RootCAs:    roots,
		ServerName: serverName,
	}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return cfg
}
