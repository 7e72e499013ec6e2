package decision

import (
	"testing"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/mcpid/mcpid/services/policy/internal/tokens"
)

func TestTokenClaims(t *testing.T) {
	for name, tc := range map[string]struct {
		claims map[string]any
		want   ClientInfo
		known  bool
	}{
		"verified web":       {map[string]any{"client_verified": true, "client_application_type": "web"}, ClientInfo{true, "web"}, true},
		"verified native":    {map[string]any{"client_verified": true, "client_application_type": "native"}, ClientInfo{true, "native"}, true},
		"unverified":         {map[string]any{"client_verified": false, "client_application_type": "web"}, ClientInfo{false, "web"}, true},
		"no claims":          {map[string]any{}, ClientInfo{}, false},
		"type without flag":  {map[string]any{"client_application_type": "web"}, ClientInfo{}, false},
		"string true":        {map[string]any{"client_verified": "true"}, ClientInfo{}, true},
		"number":             {map[string]any{"client_verified": 1}, ClientInfo{}, true},
		"unknown type":       {map[string]any{"client_verified": true, "client_application_type": "Web"}, ClientInfo{Verified: true}, true},
		"non-string type":    {map[string]any{"client_verified": true, "client_application_type": 1}, ClientInfo{Verified: true}, true},
		"null verified flag": {map[string]any{"client_verified": nil}, ClientInfo{}, true},
	} {
		t.Run(name, func(t *testing.T) {
			s, err := structpb.NewStruct(tc.claims)
			if err != nil {
				t.Fatal(err)
			}
			got, known := TokenClaims{}.Client(&tokens.Token{ClientID: "c", Claims: s})
			if got != tc.want || known != tc.known {
				t.Errorf("got %+v %v, want %+v %v", got, known, tc.want, tc.known)
			}
		})
	}
	if got, known := (TokenClaims{}).Client(&tokens.Token{}); known || got != (ClientInfo{}) {
		t.Errorf("no claims struct: %+v %v", got, known)
	}
}
