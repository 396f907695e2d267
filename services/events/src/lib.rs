//! The Avro envelope of Biglearn's topics (to be written).
