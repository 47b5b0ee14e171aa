//! Teams: a tree of teams with members and team roles, move/merge/split, shares between
//! teams, templates, analytics and the org chart.
