package jinja

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
)

// maxJSONDepth bounds the nesting ParseJSON accepts; Render's depth budget
// applies again when the value is used.
const maxJSONDepth = 64

// ParseJSON decodes one JSON value into render data that keeps the
// document's key order: objects become Object, arrays []any, numbers
// json.Number, so that a template's tojson writes keys back in the
// order the client sent them (as Python's json.loads does).
func ParseJSON(data []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	v, err := parseJSONValue(d, 0)
	if err != nil {
		return nil, err
	}
	if _, err := d.Token(); err != io.EOF {
		return nil, fmt.Errorf("jinja: trailing data after the JSON value")
	}
	return v, nil
}

func parseJSONValue(d *json.Decoder, depth int) (any, error) {
	if depth > maxJSONDepth {
		return nil, fmt.Errorf("jinja: JSON nested deeper than %d", maxJSONDepth)
	}
	tok, err := d.Token()
	if err != nil {
		return nil, err
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			obj := Object{}
			for d.More() {
				k, err := d.Token()
				if err != nil {
					return nil, err
				}
				v, err := parseJSONValue(d, depth+1)
				if err != nil {
					return nil, err
				}
				obj = append(obj, KV{Key: k.(string), Value: v})
			}
			_, err := d.Token() // '}'
			return obj, err
		case '[':
			list := []any{}
			for d.More() {
				v, err := parseJSONValue(d, depth+1)
				if err != nil {
					return nil, err
				}
				list = append(list, v)
			}
			_, err := d.Token() // ']'
			return list, err
		}
		return nil, fmt.Errorf("jinja: unexpected %v in JSON", t)
	}
	return tok, nil
}
