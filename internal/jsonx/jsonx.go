// Package jsonx holds the JSON shapes OpenAI-style APIs accept in more
// than one form, decoded once for the worker and the node's API types.
package jsonx

import (
	"bytes"
	"encoding/json"
	"reflect"
)

// StringList decodes a JSON string or array of strings (OpenAI's "stop"
// and "prompt" accept both); null is an empty list. It encodes as an
// array.
type StringList []string

// UnmarshalJSON implements json.Unmarshaler. A value of another kind is a
// *json.UnmarshalTypeError, so that encoding/json names the field.
func (l *StringList) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if bytes.Equal(b, []byte("null")) {
		*l = nil
		return nil
	}
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*l = StringList{s}
		return nil
	}
	var ss []string
	if err := json.Unmarshal(b, &ss); err != nil {
		return &json.UnmarshalTypeError{Value: Kind(b), Type: reflect.TypeFor[StringList]()}
	}
	*l = ss
	return nil
}

// Kind names the kind of a JSON value for an error message.
func Kind(b []byte) string {
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return "nothing"
	}
	switch b[0] {
	case '{':
		return "object"
	case '[':
		return "array"
	case '"':
		return "string"
	case 't', 'f':
		return "bool"
	case 'n':
		return "null"
	default:
		return "number"
	}
}
