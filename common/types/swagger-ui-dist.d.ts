declare module 'swagger-ui-dist' {
  /** The folder holding Swagger UI's static files. */
  export function getAbsoluteFSPath(): string;
  const swaggerUi: { getAbsoluteFSPath(): string };
  export default swaggerUi;
}
