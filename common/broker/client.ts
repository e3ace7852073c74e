/**
 * A plain AMQP client, amqplib's own API, for whoever talks to the broker from outside a service:
 * tests that play a publisher, a consumer or a broken peer, and the benchmark of the broker's raw
 * ceiling. Services and tools go through the rest of this module; this file exists so that the
 * AMQP library is named in the broker module only.
 */
export type { Channel, ChannelModel, ConfirmChannel, ConsumeMessage, Options } from 'amqplib';
export { default } from 'amqplib';
