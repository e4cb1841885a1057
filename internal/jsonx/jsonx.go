// Package jsonx holds the JSON shapes OpenAI-style APIs accept in more
// than one form, decoded once for the worker and the node's API types.
package jsonx

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
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
		v := Kind(b)
		if v == "array" {
			v = "array with an element that is not a string"
		}
		return &json.UnmarshalTypeError{Value: v, Type: reflect.TypeFor[StringList]()}
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

// TypeWant names what a Go type takes, in JSON terms ("a string", "an
// array of objects"), for a decode error that names no Go type.
func TypeWant(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		switch {
		case t == reflect.TypeFor[StringList]():
			return "a string or an array of strings"
		case t.Elem().Kind() == reflect.String:
			return "an array of strings"
		case t.Elem().Kind() == reflect.Struct:
			return "an array of objects"
		}
		return "an array"
	case reflect.Struct, reflect.Map:
		return "an object"
	}
	return "a value of another kind"
}

// Got names the JSON value a *json.UnmarshalTypeError reports (its
// Value: "number 1e308", "string", "array" ...) for a message.
func Got(v string) string {
	if n, ok := strings.CutPrefix(v, "number "); ok {
		return n
	}
	if strings.HasPrefix(v, "array") || strings.HasPrefix(v, "object") {
		return "an " + v
	}
	switch v {
	case "bool":
		return "a boolean"
	case "":
		return "this value"
	}
	return "a " + v
}
