// Package strictjson is a Connect codec for JSON that refuses what it does
// not know. Connect's own JSON codec discards unknown fields, so a typo
// such as "exposedPort" for "exposedPorts" silently drops a port or a
// limit; this one answers InvalidArgument naming the field. Binary
// protobuf is untouched.
package strictjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// Names under which Connect looks JSON codecs up: a request's content type
// picks one, and both spellings must be strict.
const (
	Name            = "json"
	NameCharsetUTF8 = Name + "; charset=utf-8"
)

// Codec marshals as Connect's JSON codec does and unmarshals strictly.
type Codec struct{ name string }

// New returns the strict codec registered under name (Name or
// NameCharsetUTF8).
func New(name string) *Codec { return &Codec{name: name} }

// HandlerOptions installs the strict codec for both JSON content types.
func HandlerOptions() []connect.HandlerOption {
	return []connect.HandlerOption{connect.WithCodec(New(Name)), connect.WithCodec(New(NameCharsetUTF8))}
}

// Name implements connect.Codec.
func (c *Codec) Name() string { return c.name }

// Marshal implements connect.Codec.
func (c *Codec) Marshal(message any) ([]byte, error) {
	m, err := protoMessage(message)
	if err != nil {
		return nil, err
	}
	return protojson.MarshalOptions{}.Marshal(m)
}

// MarshalAppend appends message's JSON to dst; Connect uses it to reuse
// buffers.
func (c *Codec) MarshalAppend(dst []byte, message any) ([]byte, error) {
	m, err := protoMessage(message)
	if err != nil {
		return nil, err
	}
	return protojson.MarshalOptions{}.MarshalAppend(dst, m)
}

// MarshalStable marshals compactly: protojson's whitespace varies, and
// Connect wants stable bytes for GET requests.
func (c *Codec) MarshalStable(message any) ([]byte, error) {
	b, err := c.Marshal(message)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	if err := json.Compact(&out, b); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// IsBinary reports false: JSON is text.
func (c *Codec) IsBinary() bool { return false }

// Unmarshal implements connect.Codec. An unknown field is an error naming
// it (protojson's message says `unknown field "exposedPort"`); Connect
// answers it with InvalidArgument.
func (c *Codec) Unmarshal(data []byte, message any) error {
	m, err := protoMessage(message)
	if err != nil {
		return err
	}
	if len(data) == 0 {
		return errors.New("zero-length payload is not a valid JSON object")
	}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(data, m); err != nil {
		return fmt.Errorf("%s: %w", m.ProtoReflect().Descriptor().FullName(), err)
	}
	return nil
}

func protoMessage(message any) (proto.Message, error) {
	m, ok := message.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("%T is not a protobuf message", message)
	}
	return m, nil
}
