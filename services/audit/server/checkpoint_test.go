package server_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"path/filepath"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	"github.com/mcpid/mcpid/lib/config"
	"github.com/mcpid/mcpid/lib/devca"
	"github.com/mcpid/mcpid/lib/jose"
	"github.com/mcpid/mcpid/services/audit/internal/checkpoint"
	"github.com/mcpid/mcpid/services/audit/server"
)

// Checkpoints verify with any JOSE library against the exported keys.
func TestCheckpointsExportAndVerifyExternally(t *testing.T) {
	e := newEnv(t)
	r := e.start(t, nil)
	auditor := e.as(t, r, e.operator(t, devca.RoleAuditor))
	_, err := auditor.GetCheckpoint(testCtx(t), &auditv1.GetCheckpointRequest{Sequence: 999})
	wantErr(t, "no checkpoint there", err, codes.NotFound, auditv1.ErrorReason_ERROR_REASON_CHECKPOINT_NOT_FOUND)

	res := appendOK(t, e.as(t, r, e.service(t, devca.ServicePolicy)), e.decision(t, "c1", "t", auditv1.Decision_DECISION_ALLOW))
	cp := waitCheckpoint(t, auditor, res[0].GetSequence())
	keys, err := auditor.GetCheckpointKeys(testCtx(t), &auditv1.GetCheckpointKeysRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(keys.GetKeys()) != 1 || keys.GetKeys()[0].GetStatus() != auditv1.CheckpointKeyStatus_CHECKPOINT_KEY_STATUS_ACTIVE ||
		keys.GetKeys()[0].GetKeyId() != cp.GetKeyId() || keys.GetKeys()[0].GetThumbprint() != cp.GetKeyId() ||
		keys.GetKeys()[0].GetLastUsedTime() == nil {
		t.Fatalf("keys: %v", keys)
	}

	jwks, err := protojson.Marshal(keys.GetJwks())
	if err != nil {
		t.Fatal(err)
	}
	set, err := jose.ParseJWKS(jwks)
	if err != nil {
		t.Fatal(err)
	}
	v, err := jose.NewVerifier(set, jose.VerifierOptions{Type: "mcpid-checkpoint+jwt", AllowNoExpiry: true, Issuer: "https://mcpid.example.test"})
	if err != nil {
		t.Fatal(err)
	}
	var claims checkpoint.Claims
	if _, err := v.Verify(context.Background(), cp.GetJws(), &claims); err != nil {
		t.Fatalf("external verification: %v", err)
	}
	hh, _ := base64.RawURLEncoding.DecodeString(claims.HeadHash)
	if claims.Sequence != cp.GetSequence() || !bytes.Equal(hh, cp.GetHeadHash()) || claims.HeadEventID != cp.GetHeadEventId() ||
		int64(*claims.IssuedAt) != cp.GetSignTime().GetSeconds() {
		t.Fatalf("claims %+v differ from %v", claims, cp)
	}
	got, err := auditor.GetCheckpoint(testCtx(t), &auditv1.GetCheckpointRequest{Sequence: cp.GetSequence()})
	if err != nil || got.GetCheckpoint().GetJws() != cp.GetJws() {
		t.Fatalf("GetCheckpoint(%d): %v %v", cp.GetSequence(), got, err)
	}

	// Pages of one, newest first.
	page, err := auditor.ListCheckpoints(testCtx(t), &auditv1.ListCheckpointsRequest{PageSize: 1})
	if err != nil || len(page.GetCheckpoints()) != 1 {
		t.Fatalf("ListCheckpoints: %v %v", page, err)
	}
	if page.GetNextPageToken() != "" {
		next, err := auditor.ListCheckpoints(testCtx(t), &auditv1.ListCheckpointsRequest{PageSize: 1, PageToken: page.GetNextPageToken()})
		if err != nil || len(next.GetCheckpoints()) != 1 || next.GetCheckpoints()[0].GetSequence() >= page.GetCheckpoints()[0].GetSequence() {
			t.Fatalf("second page: %v %v", next, err)
		}
	}
	_, err = auditor.ListCheckpoints(testCtx(t), &auditv1.ListCheckpointsRequest{PageToken: "garbage"})
	wantErr(t, "bad token", err, codes.InvalidArgument, auditv1.ErrorReason_ERROR_REASON_PAGE_TOKEN_INVALID)

	_, err = auditor.VerifyChain(testCtx(t), &auditv1.VerifyChainRequest{TrustedCheckpoints: []string{cp.GetJws(), "not.a.checkpoint"}})
	wantErr(t, "malformed trusted checkpoint", err, codes.InvalidArgument, auditv1.ErrorReason_ERROR_REASON_CHECKPOINT_MALFORMED)
	_, err = auditor.VerifyChain(testCtx(t), &auditv1.VerifyChainRequest{Range: &auditv1.VerifyChainRequest_SequenceRange{SequenceRange: &auditv1.SequenceRange{FromSequence: 500}}})
	wantErr(t, "range after the head", err, codes.OutOfRange, auditv1.ErrorReason_ERROR_REASON_RANGE_NOT_RETAINED)
}

// A rotated key keeps verifying the checkpoints it signed while it is
// configured as retired; without it they are reported.
func TestCheckpointKeyRotation(t *testing.T) {
	e := newEnv(t)
	oldKey := e.base.CheckpointKeyFile.Path
	r := e.start(t, nil)
	res := appendOK(t, e.as(t, r, e.service(t, devca.ServicePolicy)), e.decision(t, "c1", "t", auditv1.Decision_DECISION_ALLOW))
	old := waitCheckpoint(t, e.as(t, r, e.operator(t, devca.RoleAuditor)), res[0].GetSequence())
	r.stop()

	newKey := config.SecretFile{Path: filepath.Join(t.TempDir(), "new.jwk")}
	r2 := e.start(t, func(c *server.Config) {
		c.CheckpointKeyFile = newKey
		c.CheckpointRetiredKeyFiles = config.StringList{oldKey}
	})
	auditor := e.as(t, r2, e.operator(t, devca.RoleAuditor))
	keys, err := auditor.GetCheckpointKeys(testCtx(t), &auditv1.GetCheckpointKeysRequest{})
	if err != nil || len(keys.GetKeys()) != 2 || keys.GetKeys()[1].GetKeyId() != old.GetKeyId() ||
		keys.GetKeys()[1].GetStatus() != auditv1.CheckpointKeyStatus_CHECKPOINT_KEY_STATUS_RETIRED {
		t.Fatalf("keys after rotation: %v %v", keys, err)
	}
	// The elected replica announces the change as soon as it is elected.
	eventually(t, "key.rotated events for both keys", func() bool {
		rotated := queryAll(t, auditor, &auditv1.EventFilter{Types: []auditv1.EventType{auditv1.EventType_EVENT_TYPE_KEY_ROTATED}})
		states := map[string]string{}
		for _, ev := range rotated {
			states[ev.GetDetails().GetFields()["key_id"].GetStringValue()] = ev.GetDetails().GetFields()["state"].GetStringValue()
		}
		return states[old.GetKeyId()] == "retired" && states[keys.GetKeys()[0].GetKeyId()] == "active"
	})
	newCp := waitCheckpoint(t, auditor, old.GetSequence()+1)
	if newCp.GetKeyId() == old.GetKeyId() {
		t.Fatal("the new checkpoint was signed with the retired key")
	}
	if v := verifyChain(t, auditor, &auditv1.VerifyChainRequest{TrustedCheckpoints: []string{old.GetJws()}}); !v.GetIntact() || v.GetCheckpointsChecked() < 2 {
		t.Fatalf("verify with the retired key configured: %v", v)
	}
	r2.stop()

	r3 := e.start(t, func(c *server.Config) { c.CheckpointKeyFile = newKey })
	v := verifyChain(t, e.as(t, r3, e.operator(t, devca.RoleAuditor)), &auditv1.VerifyChainRequest{TrustedCheckpoints: []string{old.GetJws()}})
	// The first checkpoint the old key signed (stored, at the lowest
	// sequence) is reported.
	if v.GetIntact() || v.GetFirstBreak().GetKind() != auditv1.ChainBreakKind_CHAIN_BREAK_KIND_CHECKPOINT_KEY_UNKNOWN ||
		v.GetFirstBreak().GetSequence() > old.GetSequence() {
		t.Fatalf("verify without the retired key: %v", v.GetFirstBreak())
	}
}

func TestCheckpointKeySettings(t *testing.T) {
	e := newEnv(t)
	cfg := e.base
	cfg.Flags = e.pki.ServeTLS(t, server.Name, servicetestFlags(e))
	cfg.CheckpointKeyCreate = false
	cfg.CheckpointKeyFile = config.SecretFile{Path: filepath.Join(t.TempDir(), "missing.jwk")}
	if _, err := cfg.Complete(testCtx(t)); err == nil || !bytes.Contains([]byte(err.Error()), []byte("checkpoint-key-file")) {
		t.Fatalf("missing key file: %v", err)
	}
	cfg.CheckpointKeyFile = config.SecretFile{}
	cfg.CheckpointKeyCreate = true
	if _, err := cfg.Complete(testCtx(t)); err == nil || !bytes.Contains([]byte(err.Error()), []byte("checkpoint-key-create")) {
		t.Fatalf("create without a file: %v", err)
	}
}
