//! A bounds check for the request bodies that kafka-protocol decodes. Its decoders size a
//! `Vec` from the count on the wire before reading a single element, so a count of `i32::MAX`
//! in an 18-byte frame makes the allocator fail and the process abort. `check` walks the body
//! against a hand-written schema first and refuses any length or count that the bytes which
//! remain cannot hold. Produce and Fetch have their own checked decoders and are never walked.

use crate::CodecError;

/// The last version of every field that no version has dropped.
const VERSION_LAST: i16 = i16::MAX;

/// How one field is laid out on the wire. Strings, bytes and arrays carry a length prefix:
/// `i16` (strings), `i32` (bytes, arrays) or, in flexible versions, an unsigned varint of
/// length + 1 where 0 means null.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// intN, boolean, uuid: a width that never changes.
    Fixed(usize),
    String {
        nullable: bool,
    },
    Bytes {
        nullable: bool,
    },
    Array {
        nullable: bool,
        item: Item,
    },
}

/// The element of an array.
#[derive(Debug, Clone, Copy)]
enum Item {
    Fixed(usize),
    String,
    Struct(&'static [Field]),
}

/// A field and the versions (inclusive) that carry it.
#[derive(Debug, Clone, Copy)]
struct Field {
    kind: Kind,
    first: i16,
    last: i16,
}

impl Field {
    const fn new(kind: Kind) -> Self {
        Field {
            kind,
            first: 0,
            last: VERSION_LAST,
        }
    }

    /// Present from `version` on.
    const fn from(self, version: i16) -> Self {
        Field {
            first: version,
            ..self
        }
    }

    /// Present up to and including `version`.
    const fn until(self, version: i16) -> Self {
        Field {
            last: version,
            ..self
        }
    }

    fn present(&self, version: i16) -> bool {
        (self.first..=self.last).contains(&version)
    }
}

const I8: Field = Field::new(Kind::Fixed(1));
const I16: Field = Field::new(Kind::Fixed(2));
const I32: Field = Field::new(Kind::Fixed(4));
const I64: Field = Field::new(Kind::Fixed(8));
const BOOL: Field = I8;
const UUID: Field = Field::new(Kind::Fixed(16));
const STRING: Field = Field::new(Kind::String { nullable: false });
const NULLABLE_STRING: Field = Field::new(Kind::String { nullable: true });
const BYTES: Field = Field::new(Kind::Bytes { nullable: false });

const fn array(item: Item) -> Field {
    Field::new(Kind::Array {
        nullable: false,
        item,
    })
}

const fn nullable_array(item: Item) -> Field {
    Field::new(Kind::Array {
        nullable: true,
        item,
    })
}

const INT32S: Item = Item::Fixed(4);
const STRINGS: Item = Item::String;

/// A request body: which API, from which version on it is flexible (compact lengths and a
/// tagged-field section closing every struct), and its top-level fields.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Schema {
    pub(crate) api_key: i16,
    flexible_from: i16,
    body: &'static [Field],
}

/// For APIs that have no flexible version.
const NEVER_FLEXIBLE: i16 = i16::MAX;

const LIST_OFFSETS_PARTITION: &[Field] = &[I32, I32.from(4), I64];
const LIST_OFFSETS_TOPIC: &[Field] = &[STRING, array(Item::Struct(LIST_OFFSETS_PARTITION))];
const LIST_OFFSETS: &[Field] = &[
    I32,
    I8.from(2),
    array(Item::Struct(LIST_OFFSETS_TOPIC)),
    I32.from(10),
];

const METADATA_TOPIC: &[Field] = &[UUID.from(10), NULLABLE_STRING];
const METADATA: &[Field] = &[
    nullable_array(Item::Struct(METADATA_TOPIC)),
    BOOL.from(4),
    BOOL.from(8).until(10),
    BOOL.from(8),
];

const OFFSET_COMMIT_PARTITION: &[Field] = &[I32, I64, I32.from(6), NULLABLE_STRING];
const OFFSET_COMMIT_TOPIC: &[Field] = &[STRING, array(Item::Struct(OFFSET_COMMIT_PARTITION))];
const OFFSET_COMMIT: &[Field] = &[
    STRING,
    I32,
    STRING,
    NULLABLE_STRING.from(7),
    I64.until(4),
    array(Item::Struct(OFFSET_COMMIT_TOPIC)),
];

const OFFSET_FETCH_TOPIC: &[Field] = &[STRING, array(INT32S)];
const OFFSET_FETCH_GROUP: &[Field] = &[
    STRING,
    NULLABLE_STRING.from(9),
    I32.from(9),
    nullable_array(Item::Struct(OFFSET_FETCH_TOPIC)),
];
const OFFSET_FETCH: &[Field] = &[
    STRING.until(7),
    nullable_array(Item::Struct(OFFSET_FETCH_TOPIC)).until(7),
    array(Item::Struct(OFFSET_FETCH_GROUP)).from(8),
    BOOL.from(7),
];

const FIND_COORDINATOR: &[Field] = &[STRING.until(3), I8.from(1), array(STRINGS).from(4)];

const JOIN_GROUP_PROTOCOL: &[Field] = &[STRING, BYTES];
const JOIN_GROUP: &[Field] = &[
    STRING,
    I32,
    I32.from(1),
    STRING,
    NULLABLE_STRING.from(5),
    STRING,
    array(Item::Struct(JOIN_GROUP_PROTOCOL)),
    NULLABLE_STRING.from(8),
];

const HEARTBEAT: &[Field] = &[STRING, I32, STRING, NULLABLE_STRING.from(3)];

const LEAVE_GROUP_MEMBER: &[Field] = &[STRING, NULLABLE_STRING, NULLABLE_STRING.from(5)];
const LEAVE_GROUP: &[Field] = &[
    STRING,
    STRING.until(2),
    array(Item::Struct(LEAVE_GROUP_MEMBER)).from(3),
];

const SYNC_GROUP_ASSIGNMENT: &[Field] = &[STRING, BYTES];
const SYNC_GROUP: &[Field] = &[
    STRING,
    I32,
    STRING,
    NULLABLE_STRING.from(3),
    NULLABLE_STRING.from(5),
    NULLABLE_STRING.from(5),
    array(Item::Struct(SYNC_GROUP_ASSIGNMENT)),
];

const DESCRIBE_GROUPS: &[Field] = &[array(STRINGS), BOOL.from(3)];

const LIST_GROUPS: &[Field] = &[array(STRINGS).from(4), array(STRINGS).from(5)];

const API_VERSIONS: &[Field] = &[STRING.from(3), STRING.from(3)];

const CREATE_TOPICS_ASSIGNMENT: &[Field] = &[I32, array(INT32S)];
const CREATE_TOPICS_CONFIG: &[Field] = &[STRING, NULLABLE_STRING];
const CREATE_TOPICS_TOPIC: &[Field] = &[
    STRING,
    I32,
    I16,
    array(Item::Struct(CREATE_TOPICS_ASSIGNMENT)),
    array(Item::Struct(CREATE_TOPICS_CONFIG)),
];
const CREATE_TOPICS: &[Field] = &[array(Item::Struct(CREATE_TOPICS_TOPIC)), I32, BOOL];

const DELETE_TOPICS_STATE: &[Field] = &[NULLABLE_STRING, UUID];
const DELETE_TOPICS: &[Field] = &[
    array(Item::Struct(DELETE_TOPICS_STATE)).from(6),
    array(STRINGS).until(5),
    I32,
];

const DELETE_RECORDS_PARTITION: &[Field] = &[I32, I64];
const DELETE_RECORDS_TOPIC: &[Field] = &[STRING, array(Item::Struct(DELETE_RECORDS_PARTITION))];
const DELETE_RECORDS: &[Field] = &[array(Item::Struct(DELETE_RECORDS_TOPIC)), I32];

const INIT_PRODUCER_ID: &[Field] = &[NULLABLE_STRING, I32, I64.from(3), I16.from(3)];

const OFFSET_FOR_LEADER_EPOCH_PARTITION: &[Field] = &[I32, I32.from(2), I32];
const OFFSET_FOR_LEADER_EPOCH_TOPIC: &[Field] = &[
    STRING,
    array(Item::Struct(OFFSET_FOR_LEADER_EPOCH_PARTITION)),
];
const OFFSET_FOR_LEADER_EPOCH: &[Field] = &[
    I32.from(3),
    array(Item::Struct(OFFSET_FOR_LEADER_EPOCH_TOPIC)),
];

const DESCRIBE_CONFIGS_RESOURCE: &[Field] = &[I8, STRING, nullable_array(STRINGS)];
const DESCRIBE_CONFIGS: &[Field] = &[
    array(Item::Struct(DESCRIBE_CONFIGS_RESOURCE)),
    BOOL.from(1),
    BOOL.from(3),
];

const ALTER_CONFIGS_CONFIG: &[Field] = &[STRING, NULLABLE_STRING];
const ALTER_CONFIGS_RESOURCE: &[Field] = &[I8, STRING, array(Item::Struct(ALTER_CONFIGS_CONFIG))];
const ALTER_CONFIGS: &[Field] = &[array(Item::Struct(ALTER_CONFIGS_RESOURCE)), BOOL];

const DESCRIBE_LOG_DIRS_TOPIC: &[Field] = &[STRING, array(INT32S)];
const DESCRIBE_LOG_DIRS: &[Field] = &[nullable_array(Item::Struct(DESCRIBE_LOG_DIRS_TOPIC))];

const CREATE_PARTITIONS_ASSIGNMENT: &[Field] = &[array(INT32S)];
const CREATE_PARTITIONS_TOPIC: &[Field] = &[
    STRING,
    I32,
    nullable_array(Item::Struct(CREATE_PARTITIONS_ASSIGNMENT)),
];
const CREATE_PARTITIONS: &[Field] = &[array(Item::Struct(CREATE_PARTITIONS_TOPIC)), I32, BOOL];

const DELETE_GROUPS: &[Field] = &[array(STRINGS)];

const INCREMENTAL_ALTER_CONFIGS_CONFIG: &[Field] = &[STRING, I8, NULLABLE_STRING];
const INCREMENTAL_ALTER_CONFIGS_RESOURCE: &[Field] = &[
    I8,
    STRING,
    array(Item::Struct(INCREMENTAL_ALTER_CONFIGS_CONFIG)),
];
const INCREMENTAL_ALTER_CONFIGS: &[Field] = &[
    array(Item::Struct(INCREMENTAL_ALTER_CONFIGS_RESOURCE)),
    BOOL,
];

const OFFSET_DELETE_PARTITION: &[Field] = &[I32];
const OFFSET_DELETE_TOPIC: &[Field] = &[STRING, array(Item::Struct(OFFSET_DELETE_PARTITION))];
const OFFSET_DELETE: &[Field] = &[STRING, array(Item::Struct(OFFSET_DELETE_TOPIC))];

const DESCRIBE_CLUSTER: &[Field] = &[BOOL, I8.from(1), BOOL.from(2)];

const ELECT_LEADERS_TOPIC: &[Field] = &[STRING, array(INT32S)];
const ELECT_LEADERS: &[Field] = &[
    I8.from(1),
    nullable_array(Item::Struct(ELECT_LEADERS_TOPIC)),
    I32,
];

const DESCRIBE_QUORUM_PARTITION: &[Field] = &[I32];
const DESCRIBE_QUORUM_TOPIC: &[Field] = &[STRING, array(Item::Struct(DESCRIBE_QUORUM_PARTITION))];
const DESCRIBE_QUORUM: &[Field] = &[array(Item::Struct(DESCRIBE_QUORUM_TOPIC))];

const fn schema(api_key: i16, flexible_from: i16, body: &'static [Field]) -> Schema {
    Schema {
        api_key,
        flexible_from,
        body,
    }
}

/// Every API in `SUPPORTED_APIS` except Produce (0) and Fetch (1), by api key. The field
/// order and version ranges follow Kafka's `*Request.json` schemas.
pub(crate) const SCHEMAS: &[Schema] = &[
    schema(2, 6, LIST_OFFSETS),
    schema(3, 9, METADATA),
    schema(8, 8, OFFSET_COMMIT),
    schema(9, 6, OFFSET_FETCH),
    schema(10, 3, FIND_COORDINATOR),
    schema(11, 6, JOIN_GROUP),
    schema(12, 4, HEARTBEAT),
    schema(13, 4, LEAVE_GROUP),
    schema(14, 4, SYNC_GROUP),
    schema(15, 5, DESCRIBE_GROUPS),
    schema(16, 3, LIST_GROUPS),
    schema(18, 3, API_VERSIONS),
    schema(19, 5, CREATE_TOPICS),
    schema(20, 4, DELETE_TOPICS),
    schema(21, 2, DELETE_RECORDS),
    schema(22, 2, INIT_PRODUCER_ID),
    schema(23, 4, OFFSET_FOR_LEADER_EPOCH),
    schema(32, 4, DESCRIBE_CONFIGS),
    schema(33, 2, ALTER_CONFIGS),
    schema(35, 2, DESCRIBE_LOG_DIRS),
    schema(37, 2, CREATE_PARTITIONS),
    schema(42, 2, DELETE_GROUPS),
    schema(43, 2, ELECT_LEADERS),
    schema(44, 1, INCREMENTAL_ALTER_CONFIGS),
    schema(47, NEVER_FLEXIBLE, OFFSET_DELETE),
    schema(55, 0, DESCRIBE_QUORUM),
    schema(60, 0, DESCRIBE_CLUSTER),
];

/// The schema for an api key, if the guard knows it.
pub(crate) fn schema_for(api_key: i16) -> Option<&'static Schema> {
    SCHEMAS.iter().find(|schema| schema.api_key == api_key)
}

/// Walks `body` (a request body, after its header) of `api_key` at `version` and returns
/// how many bytes the body takes. Bytes after that are left alone, as kafka-protocol leaves
/// them. An API without a schema is refused: the guard fails closed.
pub(crate) fn check(api_key: i16, version: i16, body: &[u8]) -> Result<usize, CodecError> {
    let schema = schema_for(api_key).ok_or(CodecError::Malformed("request has no schema"))?;
    let mut walker = Walker::new(body, version, schema, None);
    walker.fields(schema.body)?;
    Ok(walker.pos)
}

/// How a length or count is written: what a test needs to corrupt one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Prefix {
    I16,
    I32,
    /// An unsigned varint taking this many bytes.
    Varint(usize),
}

/// The position and width of every length and count prefix in a body that passes the guard.
#[cfg(test)]
pub(crate) fn length_prefixes(
    api_key: i16,
    version: i16,
    body: &[u8],
) -> Result<Vec<(usize, Prefix)>, CodecError> {
    let schema = schema_for(api_key).ok_or(CodecError::Malformed("request has no schema"))?;
    let mut prefixes = Vec::new();
    let mut walker = Walker::new(body, version, schema, Some(&mut prefixes));
    walker.fields(schema.body)?;
    Ok(prefixes)
}

/// The longest unsigned varint that fits in a `u32`.
const UVARINT_LEN_MAX: usize = 5;

/// Steps through a body. It reads nothing but length prefixes and never allocates.
struct Walker<'a, 't> {
    body: &'a [u8],
    pos: usize,
    version: i16,
    flexible: bool,
    /// Where the prefixes were, when a test asks; `None` on the request path.
    trace: Option<&'t mut Vec<(usize, Prefix)>>,
}

impl<'a, 't> Walker<'a, 't> {
    fn new(
        body: &'a [u8],
        version: i16,
        schema: &Schema,
        trace: Option<&'t mut Vec<(usize, Prefix)>>,
    ) -> Self {
        Walker {
            body,
            pos: 0,
            version,
            flexible: version >= schema.flexible_from,
            trace,
        }
    }

    fn remaining(&self) -> usize {
        self.body.len() - self.pos
    }

    fn skip(&mut self, len: usize) -> Result<(), CodecError> {
        if len > self.remaining() {
            return Err(CodecError::Truncated);
        }
        self.pos += len;
        Ok(())
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        let end = self.pos.checked_add(N).ok_or(CodecError::Truncated)?;
        let raw = self.body.get(self.pos..end).ok_or(CodecError::Truncated)?;
        let mut out = [0; N];
        out.copy_from_slice(raw);
        self.pos = end;
        Ok(out)
    }

    fn uvarint(&mut self) -> Result<u32, CodecError> {
        let mut value: u32 = 0;
        for index in 0..UVARINT_LEN_MAX {
            let [byte] = self.take::<1>()?;
            // The fifth byte may carry only the top four bits of a u32.
            if index == UVARINT_LEN_MAX - 1 && byte > 0x0f {
                return Err(CodecError::Malformed("varint overflows u32"));
            }
            value |= u32::from(byte & 0x7f) << (7 * index as u32);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(CodecError::Malformed("varint overflows u32"))
    }

    fn note(&mut self, at: usize, prefix: Prefix) {
        if let Some(trace) = self.trace.as_mut() {
            trace.push((at, prefix));
        }
    }

    /// Reads a length or count prefix: `None` for null, which only a nullable field may be.
    /// `wide` picks `i32` over `i16` in non-flexible versions.
    fn prefix(&mut self, wide: bool, nullable: bool) -> Result<Option<usize>, CodecError> {
        let at = self.pos;
        let len = if self.flexible {
            let raw = self.uvarint()?;
            self.note(at, Prefix::Varint(self.pos - at));
            i64::from(raw) - 1
        } else if wide {
            self.note(at, Prefix::I32);
            i64::from(i32::from_be_bytes(self.take::<4>()?))
        } else {
            self.note(at, Prefix::I16);
            i64::from(i16::from_be_bytes(self.take::<2>()?))
        };
        match len {
            -1 if nullable => Ok(None),
            -1 => Err(CodecError::Malformed("null where the schema allows none")),
            len if len < 0 => Err(CodecError::Malformed("negative length or count")),
            len => usize::try_from(len)
                .map(Some)
                .map_err(|_| CodecError::Malformed("length or count above the bytes that remain")),
        }
    }

    /// Skips `len` bytes of a string or bytes field, refusing a length beyond the body.
    fn skip_counted(&mut self, len: usize) -> Result<(), CodecError> {
        if len > self.remaining() {
            return Err(CodecError::Malformed(
                "length or count above the bytes that remain",
            ));
        }
        self.pos += len;
        Ok(())
    }

    fn fields(&mut self, fields: &[Field]) -> Result<(), CodecError> {
        let version = self.version;
        for field in fields.iter().filter(|field| field.present(version)) {
            self.field(field.kind)?;
        }
        if self.flexible {
            self.tagged_fields()?;
        }
        Ok(())
    }

    fn field(&mut self, kind: Kind) -> Result<(), CodecError> {
        match kind {
            Kind::Fixed(width) => self.skip(width),
            Kind::String { nullable } => match self.prefix(false, nullable)? {
                None => Ok(()),
                Some(len) => self.skip_counted(len),
            },
            Kind::Bytes { nullable } => match self.prefix(true, nullable)? {
                None => Ok(()),
                Some(len) => self.skip_counted(len),
            },
            Kind::Array { nullable, item } => match self.prefix(true, nullable)? {
                None => Ok(()),
                Some(count) => self.array(count, item),
            },
        }
    }

    /// Every element takes at least `item_len_min` bytes, so a count the remaining bytes
    /// cannot hold is refused before any element is looked at, and the loop below runs at
    /// most once per remaining byte.
    fn array(&mut self, count: usize, item: Item) -> Result<(), CodecError> {
        let item_len_min = self.item_len_min(item).max(1);
        match count.checked_mul(item_len_min) {
            Some(len) if len <= self.remaining() => {}
            _ => {
                return Err(CodecError::Malformed(
                    "length or count above the bytes that remain",
                ))
            }
        }
        for _ in 0..count {
            match item {
                Item::Fixed(width) => self.skip(width)?,
                Item::String => self.field(Kind::String { nullable: false })?,
                Item::Struct(fields) => self.fields(fields)?,
            }
        }
        Ok(())
    }

    fn item_len_min(&self, item: Item) -> usize {
        match item {
            Item::Fixed(width) => width,
            Item::String => self.prefix_len_min(false),
            Item::Struct(fields) => self.struct_len_min(fields),
        }
    }

    fn prefix_len_min(&self, wide: bool) -> usize {
        match (self.flexible, wide) {
            (true, _) => 1,
            (false, false) => 2,
            (false, true) => 4,
        }
    }

    /// The fewest bytes a struct can take at this version: every prefix with an empty or
    /// null value, and an empty tagged-field section when flexible.
    fn struct_len_min(&self, fields: &[Field]) -> usize {
        let body: usize = fields
            .iter()
            .filter(|field| field.present(self.version))
            .map(|field| match field.kind {
                Kind::Fixed(width) => width,
                Kind::String { .. } => self.prefix_len_min(false),
                Kind::Bytes { .. } | Kind::Array { .. } => self.prefix_len_min(true),
            })
            .sum();
        body + usize::from(self.flexible)
    }

    /// A tagged-field section: a count, then (tag, size, bytes) per field. None of the
    /// requests walked here has a tagged field kafka-protocol decodes, so every one is
    /// skipped whole.
    fn tagged_fields(&mut self) -> Result<(), CodecError> {
        let at = self.pos;
        let count = usize::try_from(self.uvarint()?).unwrap_or(usize::MAX);
        self.note(at, Prefix::Varint(self.pos - at));
        // A tag and a size take at least a byte each.
        if count > self.remaining() / 2 {
            return Err(CodecError::Malformed(
                "length or count above the bytes that remain",
            ));
        }
        for _ in 0..count {
            self.uvarint()?;
            let at = self.pos;
            let size = usize::try_from(self.uvarint()?).unwrap_or(usize::MAX);
            self.note(at, Prefix::Varint(self.pos - at));
            self.skip_counted(size)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
