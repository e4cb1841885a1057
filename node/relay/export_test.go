package relay

// WholeUpTo is Whole with another bound than MaxAnswer (tests use a small
// one rather than allocating MaxAnswer).
var WholeUpTo = whole
