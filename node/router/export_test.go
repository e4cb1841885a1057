package router

// AffinitySlack is affinitySlack, for the tests of the load bound.
const AffinitySlack = affinitySlack
