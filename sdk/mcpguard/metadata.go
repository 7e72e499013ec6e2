package mcpguard

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
)

// wellKnownPRM is the RFC 9728 well-known suffix.
const wellKnownPRM = "/.well-known/oauth-protected-resource"

// protectedResourceMetadata is the RFC 9728 document.
type protectedResourceMetadata struct {
	Resource               string   `json:"resource"`
	AuthorizationServers   []string `json:"authorization_servers"`
	ScopesSupported        []string `json:"scopes_supported,omitempty"`
	BearerMethodsSupported []string `json:"bearer_methods_supported"`
	ResourceName           string   `json:"resource_name,omitempty"`
}

// metadataPaths returns the path-inserted well-known path of resource
// (RFC 9728 §3.1) and whether the resource has no path (then the metadata is
// served at the root well-known path, which is the same string).
func metadataPaths(res string) (path, resourcePath string) {
	u, _ := url.Parse(res) // canonical: parses
	resourcePath = u.EscapedPath()
	return wellKnownPRM + resourcePath, resourcePath
}

// metadataURL is the absolute URL of the metadata, built from the configured
// resource, never from the request's Host.
func metadataURL(res string) string {
	u, _ := url.Parse(res)
	p, _ := metadataPaths(res)
	return u.Scheme + "://" + u.Host + p
}

// MetadataPath is the path at which the guard serves the protected resource
// metadata (mount MetadataHandler there when you use your own mux).
func (g *Guard) MetadataPath() string { return g.metaPath }

// MetadataURL is the absolute URL of the protected resource metadata, as the
// challenges carry it.
func (g *Guard) MetadataURL() string { return g.metaURL }

// MetadataHandler serves the RFC 9728 document with CORS (browser-based MCP
// clients such as the MCP Inspector fetch it cross-origin).
func (g *Guard) MetadataHandler() http.Handler {
	body, _ := json.Marshal(protectedResourceMetadata{
		Resource:               g.cfg.Resource,
		AuthorizationServers:   []string{g.cfg.Issuer},
		ScopesSupported:        g.cfg.scopesSupported(),
		BearerMethodsSupported: []string{"header"},
		ResourceName:           g.cfg.DisplayName,
	})
	body = append(body, '\n')
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", "*")
		h.Set("Access-Control-Allow-Methods", "GET, OPTIONS")
		h.Set("Access-Control-Allow-Headers", "Content-Type, Authorization, Mcp-Protocol-Version")
		h.Set("Access-Control-Max-Age", "86400")
		switch r.Method {
		case http.MethodOptions:
			w.WriteHeader(http.StatusNoContent)
		case http.MethodGet, http.MethodHead:
			h.Set("Content-Type", "application/json")
			h.Set("Cache-Control", "public, max-age=300")
			w.WriteHeader(http.StatusOK)
			if r.Method == http.MethodGet {
				_, _ = w.Write(body)
			}
		default:
			h.Set("Allow", "GET, HEAD, OPTIONS")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		}
	})
}

// isMetadataPath reports whether p is where the metadata is served.
func (g *Guard) isMetadataPath(p string) bool {
	return p == g.metaPath || (g.resourcePath == "" && strings.TrimSuffix(p, "/") == wellKnownPRM)
}
