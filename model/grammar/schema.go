// Package grammar constrains generation to JSON that matches a schema.
//
// CompileSchema turns a JSON schema (the common subset, see DESIGN.md) into
// a graph of nodes; a Matcher walks that graph one byte at a time as a set of
// pushdown stacks (one per live alternative of anyOf/enum), and masks the
// vocabulary so that every sampled token keeps the output a valid prefix of
// a matching document. A Schema is immutable and safe for concurrent use; a
// Matcher serves one generation.
package grammar

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"math/big"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Sentinel errors; functions wrap them with %w and add detail.
var (
	// ErrUnsupported: the schema uses a keyword or value outside the
	// supported subset; the message names it.
	ErrUnsupported = errors.New("grammar: unsupported schema keyword")
	// ErrBadSchema: the schema is not a valid JSON schema (wrong type of
	// a keyword's value, a dangling $ref, an empty enum...).
	ErrBadSchema = errors.New("grammar: invalid schema")
	// ErrRejected: a token or byte does not continue the output validly.
	ErrRejected = errors.New("grammar: token rejected")
)

// Limits of a schema. They keep the matcher's state small and its work per
// byte bounded whatever the request.
const (
	// maxNodes bounds the compiled graph (a schema is request input).
	maxNodes = 4096
	// maxProps bounds an object's declared properties: the seen set is
	// one uint64.
	maxProps = 64
	// maxDepth bounds the nesting of a generated document (stack frames,
	// the document's own included): a schema whose documents all nest
	// deeper is refused, and a recursive one is followed to this depth
	// (see heights).
	maxDepth = 64
	// maxSchemaNesting bounds the nesting of the schema's own text as the
	// compiler walks it (a property, an anyOf member, a $ref's target:
	// each a level), which is not the documents' nesting: Pydantic writes
	// three levels (property, anyOf with null, $ref) for each level of a
	// document. It only bounds the compiler's recursion.
	maxSchemaNesting = 8 * maxDepth
	// maxNumber bounds a number's length in bytes, so a model cannot
	// spin on digits forever; 24 holds a float64's 17 significant digits
	// with sign, point and exponent.
	maxNumber = 24
	// maxInteger bounds an integer: a sign and 16 digits (llama.cpp's
	// limit too), so that it fits an int64 and a float64 exactly.
	maxInteger = 17
	// maxExpDigits bounds a number's exponent: with 2 digits and at most
	// maxNumber bytes a value stays within a float64's range (1E700 does
	// not, and most JSON parsers refuse it or make it infinite).
	maxExpDigits = 2
	// maxIndent bounds the spaces or tabs after a newline between tokens
	// of the document; 20, as llama.cpp's JSON grammar, lets a model
	// indent a few levels.
	maxIndent = 20
)

type kind uint8

const (
	kObject kind = iota
	kArray
	kString
	kNumber
	kInteger
	kLiteral
	kAnyOf
)

// node is one schema in the compiled graph. Nodes refer to each other by
// index, so recursive schemas ($ref cycles) are finite graphs.
type node struct {
	kind kind
	// object: names are the declared property names as JSON string
	// contents (escaped), sorted; props the value node of each.
	names      []string
	props      []int32
	required   uint64 // bit i: names[i] is required
	additional int32  // node of undeclared properties' values, -1: none allowed
	// array: prefix[i] the item at position i (prefixItems), items those
	// after
	prefix             []int32
	items              int32
	minItems, maxItems int32 // maxItems -1: unbounded
	// string: lengths in code points
	minLen, maxLen int32 // maxLen -1: unbounded
	// integer or number: bounds (minimum, maximum...), when bounded:
	// within ±maxMagnitude, or for a number in fixed point (units of
	// 10^-fixedDigits) within ±maxFixed
	lo, hi  int64
	mult    int64 // multipleOf, in the same units; 0: none
	bounded bool
	// string: the content's format (its automaton's state is the frame's
	// kpos); nil: any text
	format *byteDFA
	// literal: the exact JSON text (enum, const, true, false, null)
	lit string
	// anyOf: the alternatives (a Matcher expands nested anyOf)
	alts []int32
}

// Schema is a compiled JSON schema. It is immutable and safe for
// concurrent use.
type Schema struct {
	nodes []node
	root  int32
	// prefix and suffix are literal text around the document (Wrap).
	prefix, suffix string
	// leaves[id]: the non-anyOf nodes that node id stands for.
	leaves [][]int32
	// Nesting, in stack frames (see heights): minH[id] the least a value
	// of node id takes, deep[id] the most (maxDepth+1: more, or a
	// recursion), needs[id] the most a frame of it can require below it
	// and itself at any point.
	minH, deep, needs []int32
}

// Wrap returns a Schema whose output is prefix, then a document matching
// s, then suffix, all literal: a tool call in a model's markup, such as
// Qwen's "<tool_call>\n" … "\n</tool_call>".
func (s *Schema) Wrap(prefix, suffix string) *Schema {
	w := *s
	w.prefix, w.suffix = prefix, suffix
	return &w
}

// OnlyObjects reports whether every document s matches is a JSON object
// (what a tool call's arguments must be).
func (s *Schema) OnlyObjects() bool {
	for _, id := range s.leaves[s.root] {
		if n := &s.nodes[id]; n.kind != kObject && (n.kind != kLiteral || n.lit[0] != '{') {
			return false
		}
	}
	return true
}

// AnyObject is json_object mode: any JSON object.
func AnyObject() *Schema {
	c := newCompiler()
	any := c.anyValue()
	obj := c.add(node{kind: kObject, additional: any})
	s := &Schema{nodes: c.nodes, root: obj}
	s.leaves, _ = s.expand() // any value: 7 alternatives
	_ = s.heights()          // a recursion with scalars as a way out
	return s
}

// annotations are keywords with no effect on which documents match.
var annotations = []string{"title", "description", "default", "examples", "$schema", "$id", "$comment",
	"deprecated", "readOnly", "writeOnly", "strict",
	// OpenAPI's (Pydantic writes it beside a discriminated union's
	// oneOf): a hint for validators; oneOf still decides, and a oneOf
	// compiles only when its members are disjoint (checkOneOf).
	"discriminator",
	// JSON Schema's content keywords annotate a string (Pydantic's Json
	// field: contentMediaType application/json and its contentSchema);
	// validators do not assert them.
	"contentMediaType", "contentEncoding", "contentSchema"}

// CompileSchema compiles a JSON schema. Supported: type (a name or a list),
// properties, required, additionalProperties (a bool or a schema; it
// defaults to false when properties are given, as llama.cpp does, so the
// model writes only declared keys, and to true otherwise), items,
// prefixItems, minItems, maxItems, minLength, maxLength, format (date,
// time, date-time, uuid: see stringFormats), minimum, maximum,
// exclusiveMinimum, exclusiveMaximum (see bounds.go), enum, const (only
// their values that meet the type, length, format and bound keywords
// beside them, if any), anyOf, oneOf (when no value
// can match two members, see checkOneOf), allOf with one member (the keywords beside a combinator are
// merged into each member; see mergeInto), $ref to "#", "#/$defs/…" or
// "#/definitions/…", and annotations (title, description, default...).
// Any other keyword is an error wrapping ErrUnsupported that names it; a
// malformed schema is an error wrapping ErrBadSchema, as is a $ref loop
// that no finite document satisfies ({"$ref":"#"}, see checkRefs).
func CompileSchema(src []byte) (*Schema, error) {
	var doc any
	d := json.NewDecoder(bytes.NewReader(src))
	d.UseNumber()
	if err := d.Decode(&doc); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadSchema, err)
	}
	c := newCompiler()
	c.doc = doc
	root, err := c.compile(doc, "#", 0)
	if err != nil {
		return nil, err
	}
	if err := c.checkRefs(); err != nil {
		return nil, err
	}
	s := &Schema{nodes: c.nodes, root: root}
	if s.leaves, err = s.expand(); err != nil {
		return nil, err
	}
	if err := s.heights(); err != nil {
		return nil, err
	}
	if err := s.filterLiterals(c.literalChecks); err != nil {
		return nil, err
	}
	if err := s.checkOneOf(c.oneOfs); err != nil {
		return nil, err
	}
	return s, nil
}

type compiler struct {
	nodes   []node
	doc     any
	refs    map[string]int32 // compiled $ref targets (placeholders while compiling)
	refName map[int32]string // the $ref of each placeholder, for errors
	anyID   int32
	oneOfs  []oneOf // compiled oneOf keywords, checked once the graph is whole
	// enum and const values to check against the keywords beside them
	// once the graph is whole
	literalChecks []literalCheck
}

// oneOf is a compiled oneOf: its members' nodes and indices in the list.
type oneOf struct {
	path    string
	members []int32
	index   []int
}

func newCompiler() *compiler {
	return &compiler{refs: map[string]int32{}, refName: map[int32]string{}, anyID: -1}
}

func (c *compiler) add(n node) int32 {
	c.nodes = append(c.nodes, n)
	return int32(len(c.nodes) - 1)
}

// anyValue returns the node of any JSON value (compiled once).
func (c *compiler) anyValue() int32 {
	if c.anyID >= 0 {
		return c.anyID
	}
	c.anyID = c.add(node{kind: kAnyOf})
	obj := c.add(node{kind: kObject, additional: c.anyID})
	arr := c.add(node{kind: kArray, items: c.anyID, maxItems: -1})
	str := c.add(node{kind: kString, maxLen: -1})
	num := c.add(node{kind: kNumber})
	alts := []int32{obj, arr, str, num}
	for _, l := range []string{"true", "false", "null"} {
		alts = append(alts, c.add(node{kind: kLiteral, lit: l}))
	}
	c.nodes[c.anyID].alts = alts
	return c.anyID
}

func (c *compiler) compile(v any, path string, depth int) (int32, error) {
	if len(c.nodes) > maxNodes || depth > maxSchemaNesting {
		return 0, fmt.Errorf("%w: the schema at %s is too large or deep (at most %d nodes, %d levels of schemas within schemas)", ErrUnsupported, path, maxNodes, maxSchemaNesting)
	}
	switch s := v.(type) {
	case bool:
		if s {
			return c.anyValue(), nil
		}
		return 0, fmt.Errorf("%w: %s is the schema false, which nothing matches", ErrBadSchema, path)
	case map[string]any:
		return c.compileObject(s, path, depth)
	}
	return 0, fmt.Errorf("%w: %s must be an object or a boolean", ErrBadSchema, path)
}

func (c *compiler) compileObject(s map[string]any, path string, depth int) (int32, error) {
	keys := make([]string, 0, len(s))
	for k := range s {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	known := []string{"type", "properties", "required", "additionalProperties", "items", "prefixItems", "minItems", "maxItems",
		"minLength", "maxLength", "format", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "enum", "const", "anyOf", "oneOf", "allOf", "$ref", "$defs", "definitions"}
	for _, k := range keys {
		if !slices.Contains(known, k) && !slices.Contains(annotations, k) {
			return 0, fmt.Errorf("%w: %q at %s (supported: %s)", ErrUnsupported, k, path, strings.Join(known, ", "))
		}
	}
	// A format outside the supported ones is refused whatever the type
	// and the other keywords, before anything is compiled.
	if _, err := stringFormat(s, path); err != nil {
		return 0, err
	}
	if ref, ok := s["$ref"]; ok {
		r, ok := ref.(string)
		if !ok {
			return 0, fmt.Errorf("%w: %s/$ref must be a string", ErrBadSchema, path)
		}
		if rest := besides(s, "$ref"); len(rest) > 0 {
			// Keywords beside a $ref constrain what it names too (as
			// JSON Schema has read them since 2019-09): the target is
			// compiled with them merged in.
			return c.refWith(r, rest, path, depth)
		}
		return c.ref(r, depth)
	}
	for _, k := range []string{"const", "enum"} {
		e, ok := s[k]
		if !ok {
			continue
		}
		list := []any{e}
		if k == "enum" {
			if list, ok = e.([]any); !ok || len(list) == 0 {
				return 0, fmt.Errorf("%w: %s/enum must be a non-empty array", ErrBadSchema, path)
			}
		}
		lit, err := c.values(s, list, path+"/"+k)
		if err != nil || !structuralBeside(s) {
			return lit, err
		}
		// Keywords beside the values that values does not check
		// (properties, items, anyOf...): the values must match them too,
		// which filterLiterals checks on the whole graph.
		rest := maps.Clone(s)
		delete(rest, "const")
		delete(rest, "enum")
		within, err := c.compile(rest, path, depth+1)
		if err != nil {
			return 0, err
		}
		c.literalChecks = append(c.literalChecks, literalCheck{path: path + "/" + k, lit: lit, within: within})
		return lit, nil
	}
	for _, k := range []string{"anyOf", "oneOf", "allOf"} {
		e, ok := s[k]
		if !ok {
			continue
		}
		list, ok := e.([]any)
		if !ok || len(list) == 0 {
			return 0, fmt.Errorf("%w: %s/%s must be a non-empty array", ErrBadSchema, path, k)
		}
		if k == "allOf" && len(list) != 1 {
			return 0, fmt.Errorf("%w: allOf with more than one member at %s", ErrUnsupported, path)
		}
		if err := checkAlternatives(len(list), path+"/"+k); err != nil {
			return 0, err
		}
		// Keywords beside the combinator constrain every member too: a
		// member is compiled with them merged in.
		rest := besides(s, k)
		var alts []int32
		var index []int
		for i, sub := range list {
			at := fmt.Sprintf("%s/%s/%d", path, k, i)
			if len(rest) > 0 {
				merged, ok, err := mergeInto(rest, sub, at)
				if err != nil {
					return 0, err
				}
				if !ok {
					continue // no value is of both types
				}
				sub = merged
			}
			id, err := c.compile(sub, at, depth+1)
			if err != nil {
				return 0, err
			}
			alts = append(alts, id)
			index = append(index, i)
		}
		if len(alts) == 0 {
			return 0, fmt.Errorf("%w: %s: no member of %s is of the type beside it, so nothing matches", ErrBadSchema, path, k)
		}
		if k == "oneOf" {
			c.oneOfs = append(c.oneOfs, oneOf{path: path + "/oneOf", members: alts, index: index})
		}
		return c.anyOf(alts), nil
	}
	types, err := declaredTypes(s, path)
	if err != nil {
		return 0, err
	}
	if types == nil {
		// Guess the type from the keywords, as validators accept any value.
		switch {
		case s["properties"] != nil || s["additionalProperties"] != nil || s["required"] != nil:
			types = []string{"object"}
		case s["items"] != nil || s["prefixItems"] != nil:
			types = []string{"array"}
		case hasBounds(s):
			return 0, fmt.Errorf("%w: %s bounds numbers (minimum, maximum...) without a type; bounds are supported with \"type\": \"integer\" or \"number\"", ErrUnsupported, path)
		case s["format"] != nil:
			// Any value, but a string must have the format.
			types = []string{"object", "array", "string", "number", "boolean", "null"}
		default:
			return c.anyValue(), nil
		}
	}
	var alts []int32
	for _, t := range types {
		id, err := c.typed(t, s, path, depth)
		if err != nil {
			return 0, err
		}
		alts = append(alts, id)
	}
	if len(alts) == 0 {
		return 0, fmt.Errorf("%w: %s/type is an empty list", ErrBadSchema, path)
	}
	return c.anyOf(alts), nil
}

// anyOf returns the node matching any of alts.
func (c *compiler) anyOf(alts []int32) int32 {
	if len(alts) == 1 {
		return alts[0]
	}
	return c.add(node{kind: kAnyOf, alts: alts})
}

// checkAlternatives refuses more alternatives than a Matcher follows at
// once (maxThreads): the ones past it would be silently unreachable.
func checkAlternatives(n int, path string) error {
	if n > maxThreads {
		return fmt.Errorf("%w: %s has %d alternatives; at most %d are supported", ErrUnsupported, path, n, maxThreads)
	}
	return nil
}

func (c *compiler) typed(t string, s map[string]any, path string, depth int) (int32, error) {
	switch t {
	case "object":
		return c.object(s, path, depth)
	case "array":
		n := node{kind: kArray, maxItems: -1}
		var err error
		if n.minItems, err = count(s, "minItems", 0, path); err != nil {
			return 0, err
		}
		if n.maxItems, err = count(s, "maxItems", -1, path); err != nil {
			return 0, err
		}
		if n.maxItems >= 0 && n.maxItems < n.minItems {
			return 0, fmt.Errorf("%w: %s: maxItems < minItems", ErrBadSchema, path)
		}
		var prefix []any
		if p, ok := s["prefixItems"]; ok {
			if prefix, ok = p.([]any); !ok {
				return 0, fmt.Errorf("%w: %s/prefixItems must be an array of schemas", ErrBadSchema, path)
			}
		}
		items, ok := s["items"]
		if !ok {
			items = true
		}
		// An array ends before the first position whose schema is false:
		// a prefixItems member, or items after them.
		end, which := int32(-1), "items"
		if i := slices.IndexFunc(prefix, func(m any) bool { return m == false }); i >= 0 {
			end, prefix, which = int32(i), prefix[:i], fmt.Sprintf("prefixItems/%d", i)
		} else if items == false {
			end, items = int32(len(prefix)), true
		}
		if end >= 0 {
			if n.minItems > end {
				return 0, fmt.Errorf("%w: %s: %s is false and minItems is %d, so nothing matches", ErrBadSchema, path, which, n.minItems)
			}
			if n.maxItems < 0 || n.maxItems > end {
				n.maxItems = end
			}
		}
		id := c.add(n)
		for i, m := range prefix {
			if n.maxItems >= 0 && int32(i) >= n.maxItems {
				break // positions past maxItems are never written
			}
			it, err := c.compile(m, fmt.Sprintf("%s/prefixItems/%d", path, i), depth+1)
			if err != nil {
				return 0, err
			}
			c.nodes[id].prefix = append(c.nodes[id].prefix, it)
		}
		it, err := c.compile(items, path+"/items", depth+1)
		if err != nil {
			return 0, err
		}
		c.nodes[id].items = it
		return id, nil
	case "string":
		n := node{kind: kString}
		var err error
		if n.minLen, err = count(s, "minLength", 0, path); err != nil {
			return 0, err
		}
		if n.maxLen, err = count(s, "maxLength", -1, path); err != nil {
			return 0, err
		}
		if n.maxLen >= 0 && n.maxLen < n.minLen {
			return 0, fmt.Errorf("%w: %s: maxLength < minLength", ErrBadSchema, path)
		}
		if n.format, err = stringFormat(s, path); err != nil {
			return 0, err
		}
		if n.format != nil && !n.format.fits(0, 0, n.minLen, n.maxLen) {
			return 0, fmt.Errorf("%w: %s: no string of format %q has a length within minLength and maxLength, so nothing matches", ErrBadSchema, path, s["format"])
		}
		return c.add(n), nil
	case "number", "integer":
		n := node{kind: kNumber}
		if t == "integer" {
			n.kind = kInteger
		}
		b, err := readBounds(s, path)
		if err != nil {
			return 0, err
		}
		if b != nil {
			var ok bool
			what := fmt.Sprintf("integer within %d digits", maxInteger-1)
			if n.kind == kInteger {
				n.lo, n.hi, ok = b.integers(maxMagnitude)
				n.mult = b.step(1, maxMagnitude)
			} else {
				// In fixed point: units of 10^-fixedDigits.
				n.lo, n.hi, ok = b.scaled(fixedUnit).integers(maxFixed)
				n.mult = b.step(fixedUnit, maxFixed)
				what = fmt.Sprintf("number of at most %d digits before and after its point", fixedDigits)
			}
			if !ok || !n.anyValue() {
				return 0, fmt.Errorf("%w: %s: no %s is within its minimum and maximum (and a multiple of its multipleOf), so nothing matches", ErrBadSchema, path, what)
			}
			n.bounded = true
		}
		return c.add(n), nil
	case "boolean":
		return c.anyOf([]int32{c.add(node{kind: kLiteral, lit: "true"}), c.add(node{kind: kLiteral, lit: "false"})}), nil
	case "null":
		return c.add(node{kind: kLiteral, lit: "null"}), nil
	}
	return 0, fmt.Errorf("%w: %s/type %q is not a JSON schema type", ErrBadSchema, path, t)
}

// count reads a non-negative integer keyword; def when absent.
func count(s map[string]any, k string, def int32, path string) (int32, error) {
	v, ok := s[k]
	if !ok {
		return def, nil
	}
	n, ok := v.(json.Number)
	if !ok {
		return 0, fmt.Errorf("%w: %s/%s must be a number", ErrBadSchema, path, k)
	}
	i, err := n.Int64()
	if err != nil || i < 0 || i > math.MaxInt32 {
		return 0, fmt.Errorf("%w: %s/%s must be a non-negative integer", ErrBadSchema, path, k)
	}
	return int32(i), nil
}

func (c *compiler) object(s map[string]any, path string, depth int) (int32, error) {
	props, _ := s["properties"].(map[string]any)
	if p, ok := s["properties"]; ok && props == nil && p != nil {
		return 0, fmt.Errorf("%w: %s/properties must be an object", ErrBadSchema, path)
	}
	if len(props) > maxProps {
		return 0, fmt.Errorf("%w: %s has %d properties; at most %d are supported", ErrUnsupported, path, len(props), maxProps)
	}
	type prop struct {
		raw, enc string
	}
	list := make([]prop, 0, len(props))
	var absent []string // properties whose schema is false: they must not appear
	for name, sub := range props {
		if sub == false {
			absent = append(absent, name)
			continue
		}
		b, _ := marshal(name)
		list = append(list, prop{raw: name, enc: string(b[1 : len(b)-1])})
	}
	sort.Slice(list, func(i, j int) bool { return list[i].enc < list[j].enc })
	id := c.add(node{kind: kObject, additional: -1})
	n := node{kind: kObject, additional: -1}
	for _, p := range list {
		v, err := c.compile(props[p.raw], path+"/properties/"+p.raw, depth+1)
		if err != nil {
			return 0, err
		}
		n.names = append(n.names, p.enc)
		n.props = append(n.props, v)
	}
	if r, ok := s["required"]; ok {
		req, ok := r.([]any)
		if !ok {
			return 0, fmt.Errorf("%w: %s/required must be an array of strings", ErrBadSchema, path)
		}
		for _, e := range req {
			name, ok := e.(string)
			if !ok {
				return 0, fmt.Errorf("%w: %s/required must be an array of strings", ErrBadSchema, path)
			}
			if slices.Contains(absent, name) {
				return 0, fmt.Errorf("%w: %s/required names %q, whose schema is false, so nothing matches", ErrBadSchema, path, name)
			}
			i := slices.IndexFunc(list, func(p prop) bool { return p.raw == name })
			if i < 0 {
				return 0, fmt.Errorf("%w: %s/required names %q, which is not in properties", ErrUnsupported, path, name)
			}
			n.required |= 1 << i
		}
	}
	switch a := s["additionalProperties"].(type) {
	case nil:
		// Undeclared keys only when properties is absent (an empty
		// properties object declares that there are none: a function
		// without parameters takes {}), as llama.cpp reads it.
		if _, given := s["additionalProperties"]; given || s["properties"] == nil {
			n.additional = c.anyValue()
		}
	case bool:
		if a {
			n.additional = c.anyValue()
		}
	default:
		v, err := c.compile(a, path+"/additionalProperties", depth+1)
		if err != nil {
			return 0, err
		}
		n.additional = v
	}
	if n.additional >= 0 {
		// Keys beside undeclared ones are written without \u escapes
		// (the matcher's keyStep): a declared name that has no other
		// JSON spelling could not be written.
		for _, p := range list {
			if strings.Contains(p.enc, `\u`) {
				return 0, fmt.Errorf("%w: %s/properties/%s can only be written with a \\u escape, which keys beside additionalProperties may not use; set additionalProperties to false",
					ErrUnsupported, path, strconv.Quote(p.raw))
			}
		}
	}
	if len(absent) > 0 && n.additional >= 0 {
		// Undeclared keys are any string: one of these could be written.
		slices.Sort(absent)
		return 0, fmt.Errorf("%w: %s/properties/%s is false (the property must be absent) beside additionalProperties that allow other keys; set additionalProperties to false",
			ErrUnsupported, path, absent[0])
	}
	c.nodes[id] = n
	return id, nil
}

// besides returns the keywords of s that constrain a value, other than
// the combinator k (annotations and $defs/definitions constrain nothing);
// nil when there are none.
func besides(s map[string]any, k string) map[string]any {
	var rest map[string]any
	for key, v := range s {
		if key == k || key == "$defs" || key == "definitions" || slices.Contains(annotations, key) {
			continue
		}
		if rest == nil {
			rest = map[string]any{}
		}
		rest[key] = v
	}
	return rest
}

// mergeInto returns the member sub of a combinator with the keywords rest
// beside the combinator merged in, so that it matches what both match.
// Types are intersected (an integer is a number); ok is false when no
// type is left. Another keyword in both with different values, or a
// member that is a $ref, is refused as unsupported rather than one side
// silently dropped.
func mergeInto(rest map[string]any, sub any, path string) (merged map[string]any, ok bool, err error) {
	var m map[string]any
	switch t := sub.(type) {
	case bool:
		if !t {
			return nil, false, nil
		}
		m = map[string]any{}
	case map[string]any:
		m = t
	default:
		return nil, false, fmt.Errorf("%w: %s must be an object or a boolean", ErrBadSchema, path)
	}
	if _, ok := m["$ref"]; ok {
		return nil, false, fmt.Errorf("%w: %s is a $ref beside keywords (%s) that constrain it too", ErrUnsupported, path, strings.Join(slices.Sorted(maps.Keys(rest)), ", "))
	}
	merged = maps.Clone(m)
	for k, v := range rest {
		have, in := merged[k]
		switch {
		case !in:
			merged[k] = v
		case k == "type":
			outer, err := declaredTypes(rest, path)
			if err != nil {
				return nil, false, err
			}
			inner, err := declaredTypes(m, path)
			if err != nil {
				return nil, false, err
			}
			var both []any
			for _, t := range inner {
				switch {
				case slices.Contains(outer, t):
					both = append(both, t)
				case t == "integer" && slices.Contains(outer, "number"):
					both = append(both, t)
				case t == "number" && slices.Contains(outer, "integer"):
					both = append(both, "integer")
				}
			}
			if len(both) == 0 {
				return nil, false, nil
			}
			merged[k] = both
		case !reflect.DeepEqual(have, v):
			return nil, false, fmt.Errorf("%w: %s sets %q, which the schema around it sets otherwise", ErrUnsupported, path, k)
		}
	}
	return merged, true, nil
}

// declaredTypes reads the type keyword of s: nil when it is absent.
func declaredTypes(s map[string]any, path string) ([]string, error) {
	var types []string
	switch t := s["type"].(type) {
	case nil:
		if _, ok := s["type"]; ok {
			return nil, fmt.Errorf("%w: %s/type must be a string or an array of strings", ErrBadSchema, path)
		}
		return nil, nil
	case string:
		types = []string{t}
	case []any:
		types = []string{}
		for _, e := range t {
			name, ok := e.(string)
			if !ok {
				return nil, fmt.Errorf("%w: %s/type must be a string or an array of strings", ErrBadSchema, path)
			}
			types = append(types, name)
		}
	default:
		return nil, fmt.Errorf("%w: %s/type must be a string or an array of strings", ErrBadSchema, path)
	}
	return types, nil
}

// values compiles an enum or const: the values list, less those the
// schema's type keyword (s's) excludes, as a validator checks both. A
// list with none left is refused: nothing matches it.
func (c *compiler) values(s map[string]any, list []any, path string) (int32, error) {
	types, err := declaredTypes(s, path)
	switch {
	case err != nil:
		return 0, err
	case types != nil && len(types) == 0:
		return 0, fmt.Errorf("%w: %s/type is an empty list", ErrBadSchema, path)
	}
	for _, t := range types {
		if !slices.Contains(schemaTypes, t) {
			return 0, fmt.Errorf("%w: %s/type %q is not a JSON schema type", ErrBadSchema, path, t)
		}
	}
	// A value must meet every keyword beside the list, as a validator
	// reads them: of a declared type, within the length bounds.
	var kept []any
	for _, v := range list {
		if types != nil && !slices.ContainsFunc(types, func(t string) bool { return ofType(v, t) }) {
			continue
		}
		ok, err := withinLengths(s, v, path)
		if err != nil {
			return 0, err
		}
		format, err := stringFormat(s, path)
		if err != nil {
			return 0, err
		}
		if str, isStr := v.(string); isStr && format != nil && !format.matches(str) {
			ok = false
		}
		bounds, err := readBounds(s, path)
		if err != nil {
			return 0, err
		}
		if num, isNum := v.(json.Number); isNum && bounds != nil {
			r, _ := new(big.Rat).SetString(string(num))
			ok = ok && r != nil && bounds.contains(r)
		}
		if ok {
			kept = append(kept, v)
		}
	}
	if len(kept) == 0 {
		what := "meets the keywords beside it"
		if types != nil {
			what = "is of type " + strings.Join(types, " or ") + " and meets the keywords beside it"
		}
		return 0, fmt.Errorf("%w: %s: no value %s, so nothing matches", ErrBadSchema, path, what)
	}
	return c.literals(kept, path)
}

// withinLengths reports whether v, a string or an array, meets the
// length keywords of s beside an enum or const (minLength and maxLength
// in characters, minItems and maxItems); other values have none.
func withinLengths(s map[string]any, v any, path string) (bool, error) {
	var n int
	var lo, hi string
	switch x := v.(type) {
	case string:
		n, lo, hi = utf8.RuneCountInString(x), "minLength", "maxLength"
	case []any:
		n, lo, hi = len(x), "minItems", "maxItems"
	default:
		return true, nil
	}
	least, err := count(s, lo, 0, path)
	if err != nil {
		return false, err
	}
	most, err := count(s, hi, -1, path)
	if err != nil {
		return false, err
	}
	return n >= int(least) && (most < 0 || n <= int(most)), nil
}

// schemaTypes are the names of the type keyword.
var schemaTypes = []string{"object", "array", "string", "number", "integer", "boolean", "null"}

// ofType reports whether the decoded JSON value v (numbers as json.Number)
// is of the schema type t; an integer is a number without a fraction
// (1.0 is one).
func ofType(v any, t string) bool {
	switch x := v.(type) {
	case nil:
		return t == "null"
	case bool:
		return t == "boolean"
	case string:
		return t == "string"
	case map[string]any:
		return t == "object"
	case []any:
		return t == "array"
	case json.Number:
		if t == "number" {
			return true
		}
		f, err := strconv.ParseFloat(x.String(), 64)
		return t == "integer" && err == nil && f == math.Trunc(f)
	}
	return false
}

// literals returns the node matching exactly the JSON values list.
func (c *compiler) literals(list []any, path string) (int32, error) {
	if err := checkAlternatives(len(list), path); err != nil {
		return 0, err
	}
	var alts []int32
	seen := map[string]bool{}
	for _, v := range list {
		b, err := marshal(v)
		if err != nil {
			return 0, fmt.Errorf("%w: %s: %v", ErrBadSchema, path, err)
		}
		if !seen[string(b)] {
			seen[string(b)] = true
			alts = append(alts, c.add(node{kind: kLiteral, lit: string(b)}))
		}
	}
	return c.anyOf(alts), nil
}

// marshal writes v as compact JSON without HTML escaping: the text a
// model writes for a name or value ("a<b", not "a\u003cb").
func marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// ref compiles a local reference, once per target (cycles refer back to
// the node being compiled).
func (c *compiler) ref(r string, depth int) (int32, error) {
	if id, ok := c.refs[r]; ok {
		return id, nil
	}
	if r != "#" && !strings.HasPrefix(r, "#/") {
		return 0, fmt.Errorf("%w: $ref %q (only local references, #/...)", ErrUnsupported, r)
	}
	target, err := c.resolve(r)
	if err != nil {
		return 0, err
	}
	// A placeholder anyOf of one alternative, filled once compiled, so a
	// cycle reaching r again uses it.
	ph := c.add(node{kind: kAnyOf})
	c.refs[r] = ph
	c.refName[ph] = r
	id, err := c.compile(target, r, depth+1)
	if err != nil {
		return 0, err
	}
	c.nodes[ph].alts = []int32{id}
	return ph, nil
}

// refWith compiles the schema the local reference r names with the
// keywords rest merged in, once per r and rest, as ref does (a recursion
// through the same $ref and keywords refers back to the node compiled).
func (c *compiler) refWith(r string, rest map[string]any, path string, depth int) (int32, error) {
	b, err := marshal(rest)
	if err != nil {
		return 0, fmt.Errorf("%w: %s: %v", ErrBadSchema, path, err)
	}
	key := r + " " + string(b)
	if id, ok := c.refs[key]; ok {
		return id, nil
	}
	target, err := c.resolve(r)
	if err != nil {
		return 0, err
	}
	merged, ok, err := mergeInto(rest, target, path+"/$ref")
	if err != nil {
		return 0, err
	}
	if !ok {
		return 0, fmt.Errorf("%w: %s: the $ref's type and the type beside it share no value, so nothing matches", ErrBadSchema, path)
	}
	ph := c.add(node{kind: kAnyOf})
	c.refs[key] = ph
	c.refName[ph] = r
	id, err := c.compile(merged, r, depth+1)
	if err != nil {
		return 0, err
	}
	c.nodes[ph].alts = []int32{id}
	return ph, nil
}

// resolve returns the schema a local reference names.
func (c *compiler) resolve(r string) (any, error) {
	if r != "#" && !strings.HasPrefix(r, "#/") {
		return nil, fmt.Errorf("%w: $ref %q (only local references, #/...)", ErrUnsupported, r)
	}
	var target any = c.doc
	if r != "#" {
		for _, part := range strings.Split(r[2:], "/") {
			part = strings.ReplaceAll(strings.ReplaceAll(part, "~1", "/"), "~0", "~")
			var ok bool
			switch t := target.(type) {
			case map[string]any:
				target, ok = t[part]
			case []any: // a member of anyOf, oneOf or allOf
				i, err := strconv.Atoi(part)
				if ok = err == nil && i >= 0 && i < len(t) && part == strconv.Itoa(i); ok {
					target = t[i]
				}
			}
			if !ok {
				return nil, fmt.Errorf("%w: $ref %q does not resolve", ErrBadSchema, r)
			}
		}
	}
	return target, nil
}

// checkRefs refuses a schema that a $ref cycle makes unsatisfiable: a node
// that no finite document matches. Every node that does not recurse matches
// something (the schema false and an empty enum are refused where they are
// compiled), so such a node always lies on a cycle of references that
// either loops without consuming any input ({"$ref":"#"}, a $ref to a
// $ref back to the first, an anyOf whose only alternatives refer back:
// "left recursion"), or whose every match must contain another match of
// itself (an object requiring a property of its own schema, an array of
// at least one item of it). The matcher could start no document, or only
// ones it can never finish, so these are refused here, naming the loop.
// A recursion with a way out (an optional property, an anyOf with a
// null, an array that may be empty) matches finite documents and passes.
func (c *compiler) checkRefs() error {
	// Least fixpoint: a node matches something when its leaf kind does,
	// an anyOf when one alternative does, an object when every required
	// property does, an array when it may be empty or its items match.
	deps := func(id int32) (list []int32, need int) {
		n := &c.nodes[id]
		switch n.kind {
		case kAnyOf:
			return n.alts, 1 // an unfilled placeholder (no alts) never matches
		case kObject:
			for i, p := range n.props {
				if n.required&(1<<i) != 0 {
					list = append(list, p)
				}
			}
			return list, len(list)
		case kArray:
			list = n.requiredItems()
			return list, len(list)
		}
		return nil, 0
	}
	need := make([]int, len(c.nodes))
	parents := make([][]int32, len(c.nodes))
	matches := make([]bool, len(c.nodes))
	var queue []int32
	for id := range c.nodes {
		list, k := deps(int32(id))
		for _, d := range list {
			parents[d] = append(parents[d], int32(id))
		}
		if need[id] = k; k == 0 {
			queue = append(queue, int32(id))
		}
	}
	for len(queue) > 0 {
		id := queue[len(queue)-1]
		queue = queue[:len(queue)-1]
		if matches[id] {
			continue
		}
		matches[id] = true
		for _, p := range parents[id] {
			if !matches[p] {
				if need[p]--; need[p] == 0 {
					queue = append(queue, p)
				}
			}
		}
	}
	start := slices.Index(matches, false)
	if start < 0 {
		return nil
	}
	// Every node that matches nothing has a child that matches nothing
	// (an anyOf: all of them; an object: a required property; an array:
	// its items); following them from the first such node ends in a cycle.
	var path []int32
	at := map[int32]int{}
	id := int32(start)
	for {
		if i, ok := at[id]; ok {
			path = path[i:]
			break
		}
		at[id] = len(path)
		path = append(path, id)
		list, _ := deps(id)
		i := slices.IndexFunc(list, func(d int32) bool { return !matches[d] })
		if i < 0 {
			break // not reached: see above
		}
		id = list[i]
	}
	// Name the cycle's references, from the first one compiled.
	first, consumes := -1, false
	for i, id := range path {
		if _, ok := c.refName[id]; ok && (first < 0 || id < path[first]) {
			first = i
		}
		consumes = consumes || c.nodes[id].kind != kAnyOf
	}
	if first < 0 {
		return fmt.Errorf("%w: the schema can never be satisfied (a $ref cycle)", ErrBadSchema)
	}
	var names []string
	for i := range path {
		if r, ok := c.refName[path[(first+i)%len(path)]]; ok {
			names = append(names, fmt.Sprintf("%q", r))
		}
	}
	names = append(names, names[0])
	loop := strings.Join(names, " -> ")
	if !consumes {
		return fmt.Errorf("%w: $ref %s loops (%s) without reaching a schema: it refers back to itself before matching any value, so nothing matches it",
			ErrBadSchema, names[0], loop)
	}
	return fmt.Errorf("%w: $ref %s loops (%s) with no way out: every value it matches must contain another, so no finite document matches it",
		ErrBadSchema, names[0], loop)
}

// Rebase returns the schema src with every local $ref ("#", "#/…") made
// relative to at, the JSON pointer ("#/…") where src is to be embedded in
// a larger schema: a tool's parameters inside the schema of a call, whose
// "#/$defs/…" would otherwise name the larger schema's $defs (or nothing).
// Only the keywords that hold schemas are walked, so a "$ref" inside an
// enum or const value is left as it is.
func Rebase(src []byte, at string) ([]byte, error) {
	var doc any
	d := json.NewDecoder(bytes.NewReader(src))
	d.UseNumber()
	if err := d.Decode(&doc); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadSchema, err)
	}
	rebase(doc, strings.TrimSuffix(at, "/"), 0)
	return marshal(doc)
}

func rebase(v any, at string, depth int) {
	s, ok := v.(map[string]any)
	if !ok || depth > maxSchemaNesting {
		return // deeper than the compiler takes: refused there
	}
	if r, ok := s["$ref"].(string); ok && (r == "#" || strings.HasPrefix(r, "#/")) {
		s["$ref"] = at + r[1:]
	}
	for _, k := range []string{"items", "additionalProperties"} {
		rebase(s[k], at, depth+1)
	}
	for _, k := range []string{"properties", "$defs", "definitions"} {
		if m, ok := s[k].(map[string]any); ok {
			for _, sub := range m {
				rebase(sub, at, depth+1)
			}
		}
	}
	for _, k := range []string{"anyOf", "oneOf", "allOf", "prefixItems"} {
		if list, ok := s[k].([]any); ok {
			for _, sub := range list {
				rebase(sub, at, depth+1)
			}
		}
	}
}

// item is the node of an array's item at position i (a count that
// saturated at countCap may say less than the position: past the prefix
// either way, so items).
func (n *node) item(i int32) int32 {
	if i >= 0 && int(i) < len(n.prefix) {
		return n.prefix[i]
	}
	return n.items
}

// requiredItems returns the nodes of the items an array must have (its first
// minItems positions), each once.
func (n *node) requiredItems() []int32 {
	var list []int32
	for i := int32(0); i < n.minItems && int(i) <= len(n.prefix); i++ {
		if it := n.item(i); !slices.Contains(list, it) {
			list = append(list, it)
		}
	}
	return list
}

// countCap is where an array's item count saturates when it has no
// maxItems: past it, the count no longer matters (minItems met, the
// prefix positions behind), so that states repeat for the mask cache.
func (n *node) countCap() int32 {
	if len(n.prefix) == 0 {
		return n.minItems
	}
	return max(n.minItems, int32(len(n.prefix))+1)
}

// literalCheck is an enum or const (lit: its literal, or the anyOf of
// them) with keywords beside it that values does not check, compiled
// without the values (within).
type literalCheck struct {
	path        string
	lit, within int32
}

// structuralBeside reports whether s has, beside its enum or const,
// keywords that values does not check itself (it checks the type, the
// lengths, format and bounds): properties, items, anyOf...
func structuralBeside(s map[string]any) bool {
	for k := range besides(s, "enum") {
		switch k {
		case "const", "type", "minLength", "maxLength", "minItems", "maxItems", "format":
		default:
			if !slices.Contains(boundKeywords, k) {
				return true
			}
		}
	}
	return false
}

// filterLiterals keeps, of each checked enum or const, the values that
// match the keywords beside it (a validator checks both: an object value
// missing a required property, an array value whose items are of another
// type, a value outside an anyOf beside it are no values of the schema).
// The graph is whole, so a matcher rooted at the keywords' node reads
// each value's JSON text. None left is ErrBadSchema.
func (s *Schema) filterLiterals(checks []literalCheck) error {
	if len(checks) == 0 {
		return nil
	}
	for _, lc := range checks {
		within := *s
		within.root, within.prefix, within.suffix = lc.within, "", ""
		alts := []int32{lc.lit}
		if s.nodes[lc.lit].kind == kAnyOf {
			alts = s.nodes[lc.lit].alts
		}
		var kept []int32
		for _, a := range alts {
			if m := within.NewMatcher(nil); m.Write([]byte(s.nodes[a].lit)) == nil && m.CanEnd() {
				kept = append(kept, a)
			}
		}
		if len(kept) == 0 {
			return fmt.Errorf("%w: %s: no value meets the keywords beside it, so nothing matches", ErrBadSchema, lc.path)
		}
		if len(kept) < len(alts) { // so lit is an anyOf: a single literal kept is all of it
			s.nodes[lc.lit].alts = kept
		}
	}
	// Fewer alternatives: the leaves and nesting are computed again.
	var err error
	if s.leaves, err = s.expand(); err != nil {
		return err
	}
	return s.heights()
}
