//! SPARFA math (to be written).
